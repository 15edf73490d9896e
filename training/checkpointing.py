"""Resumable checkpoints (accelerate state + progress) and the final outputs the backend loads.

- ``<output_dir>/checkpoints/step_NNNNNNN/``: ``accelerator.save_state`` (trainable weights only,
  optimizer, scheduler, RNG) plus ``progress.json`` (step, epoch, batches consumed in that epoch).
- ``<output_dir>/model/``: full fine-tune / stage 1 in the released layout (``pretrained=<folder>``).
- ``<output_dir>/adapter/``: LoRA as a peft adapter folder (``pretrained=<base>,lora=<folder>``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType

from llamavid_eval.model.loading import LoadedLlamaVid, load_llamavid, torch_dtype
from llamavid_eval.model.lora import apply_lora
from llamavid_eval.model.saving import save_released
from llamavid_eval.training.config import ConfigError, TrainConfig

PROGRESS = "progress.json"
CONFIG = "train_config.yaml"
#: What a resumed run may change: where it writes and how it reports, not what it computes.
MAY_CHANGE = ("output_dir", "resume", "log_every", "report_to", "keep_checkpoints", "save_every", "eval_every",
              "num_workers")  # fmt: skip


@dataclass
class Progress:
    """Where a run stands: optimizer steps taken, current epoch, batches of that epoch consumed."""

    step: int = 0
    epoch: int = 0
    batches: int = 0


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints (with ``progress.json``), oldest first."""
    folder = output_dir / "checkpoints"
    return sorted(p.parent for p in folder.glob(f"step_*/{PROGRESS}")) if folder.is_dir() else []


def resume_dir(config: TrainConfig, output_dir: Path) -> Path | None:
    """``auto``: the latest checkpoint of this output folder, if any; ``never``; or a given folder."""
    if config.resume == "never":
        return None
    if config.resume == "auto":
        found = checkpoint_dirs(output_dir)
        return found[-1] if found else None
    path = Path(config.resume)
    if not (path / PROGRESS).is_file():
        raise FileNotFoundError(f"resume={config.resume!r}: no {PROGRESS} there (expected a checkpoints/step_* folder)")
    return path


def check_output_dir(config: TrainConfig, output_dir: Path) -> None:
    """Before anything is written: the folder is this run's own (not its base, no finished or foreign run
    in it), and a checkpoint it resumes was made with this config (else the schedule, the data order or
    the optimizer state would silently belong to another run)."""
    base, output = Path(config.base).expanduser(), output_dir.expanduser().resolve()
    if base.exists() and (base.resolve() == output or output in base.resolve().parents):
        raise ConfigError(f"base={config.base} lies in output_dir={output_dir}: the run would overwrite its base; "
                          "choose another output_dir")  # fmt: skip
    finished = [name for name in ("model", "adapter") if (output_dir / name).exists()]
    if finished:
        raise ConfigError(f"output_dir={output_dir} holds a finished run ({', '.join(finished)}/); choose a new "
                          "output_dir (the finished run stays as it is)")  # fmt: skip
    if config.resume == "never" and checkpoint_dirs(output_dir):
        raise ConfigError(f"output_dir={output_dir} holds another run's checkpoints and resume=never: choose a new "
                          "output_dir, or resume=auto to continue that run")  # fmt: skip
    start = resume_dir(config, output_dir)
    saved = next((p for p in (start / CONFIG, start.parent.parent / CONFIG) if p.is_file()), None) if start else None
    if saved is None:
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    now = yaml.safe_load(config.to_yaml())
    changed = [f"{key}: {before.get(key)!r} -> {value!r}" for key, value in now.items()
               if key not in MAY_CHANGE and before.get(key) != value]  # fmt: skip
    if changed:
        raise ConfigError(f"resume from {start}: the config changed since that checkpoint ({'; '.join(changed)}). "
                          "Restore those values, or start afresh: resume=never and a new output_dir")  # fmt: skip


def keep_trainable_only(accelerator: Accelerator) -> None:
    """Checkpoints hold the weights that change; frozen ones (vision tower, LoRA's base) come from ``base``."""

    def drop_frozen(models: list[torch.nn.Module], weights: list[dict], _: str) -> None:
        for model, state in zip(models, weights, strict=False):
            trainable = {name for name, p in model.named_parameters() if p.requires_grad}
            for name in [n for n in state if n not in trainable]:
                del state[name]

    accelerator.register_save_state_pre_hook(drop_frozen)


def save_checkpoint(accelerator: Accelerator, config: TrainConfig, output_dir: Path, progress: Progress) -> Path:
    """Save a resumable state with the config that made it; drop all but the newest ``keep_checkpoints``."""
    path = output_dir / "checkpoints" / f"step_{progress.step:07d}"
    accelerator.save_state(str(path))
    keep = config.keep_checkpoints
    if accelerator.is_main_process:
        (path / CONFIG).write_text(config.to_yaml(), encoding="utf-8")
        (path / PROGRESS).write_text(json.dumps(asdict(progress)))
        for old in checkpoint_dirs(output_dir)[: -max(keep, 1)]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint(accelerator: Accelerator, path: Path) -> Progress:
    """Restore the state saved by :func:`save_checkpoint` (frozen weights are not in it: non-strict)."""
    strict = (
        {} if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP) else {"strict": False}
    )
    accelerator.load_state(str(path), **strict)
    return Progress(**json.loads((path / PROGRESS).read_text()))


def save_final(
    accelerator: Accelerator, module: torch.nn.Module, config: TrainConfig, loaded: LoadedLlamaVid, output_dir: Path
) -> Path:
    """Full / stage 1: released layout; LoRA: peft adapter folder. Returns the folder."""
    state = accelerator.get_state_dict(module)  # gathers ZeRO-3 / FSDP shards on the main process
    state = {name.removeprefix("model."): tensor for name, tensor in state.items()}
    dtype = torch_dtype(config.save_dtype)
    inner = accelerator.unwrap_model(module).model
    if config.method == "lora":
        out = output_dir / "adapter"
        state = {k: v.to(dtype) for k, v in state.items() if "lora_" in k or "modules_to_save" in k}
        inner.save_pretrained(str(out), state_dict=state, is_main_process=accelerator.is_main_process)
    else:
        out = output_dir / "model"
        if accelerator.is_main_process:
            inner.config.use_cache = True  # was off for gradient checkpointing only; training is over
            save_released(
                inner,
                out,
                vision_tower_path=str(loaded.vision_tower_path),
                dtype=dtype,
                tokenizer_from=loaded.checkpoint_dir,
                state_dict=state,
            )
    accelerator.wait_for_everyone()
    return out


def merge_lora(
    base: str,
    lora: str,
    out: str | Path,
    *,
    vision_tower: str | None = None,
    qformer_tokenizer: str | None = None,
    dtype: str = "bfloat16",
) -> Path:
    """Base + adapter -> a full checkpoint in the released layout (what ``pretrained=`` loads)."""
    if Path(base).expanduser().exists() and Path(out).expanduser().resolve() == Path(base).expanduser().resolve():
        raise ConfigError(f"--out {out} is the base checkpoint: merging there would overwrite it; name a new folder")
    loaded = load_llamavid(base, vision_tower=vision_tower, qformer_tokenizer=qformer_tokenizer)
    merged = apply_lora(loaded.model, lora)
    return save_released(
        merged,
        out,
        vision_tower_path=str(loaded.vision_tower_path),
        dtype=torch_dtype(dtype),
        tokenizer_from=loaded.checkpoint_dir,
    )
