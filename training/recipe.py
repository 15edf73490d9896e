"""The training recipe in the torchtune shape: setup functions (accelerator, model, data, optimiser,
schedule, resume point), then one loop that reads top to bottom, then the final evaluation and save.

Runs unchanged under ``llamavid train`` (one process) and ``accelerate launch -m llamavid_eval.training
train`` (data parallel, DeepSpeed ZeRO-2/3 or FSDP as the accelerate config says).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from llamavid_eval.model.loading import LoadedLlamaVid, load_llamavid, torch_dtype
from llamavid_eval.training.checkpointing import (
    Progress,
    check_output_dir,
    keep_trainable_only,
    load_checkpoint,
    resume_dir,
    save_checkpoint,
    save_final,
)
from llamavid_eval.training.config import TrainConfig
from llamavid_eval.training.data import Collator, EpochShuffleSampler, load_datasets
from llamavid_eval.training.metrics import RunLogger, trackers
from llamavid_eval.training.params import (
    TrainingModule,
    configure_trainable,
    enable_gradient_checkpointing,
    module_base,
    trainable_parameters,
    upcast_trainable,
)


@dataclass
class TrainingRun:
    """The saved output folder and the trained in-memory module (unwrapped)."""

    output: Path
    module: TrainingModule
    progress: Progress


@dataclass
class Window:
    """Loss and tokens summed since the last log line (kept on the device: no host sync per step)."""

    loss: torch.Tensor
    tokens: torch.Tensor
    micro: int = 0
    since: float = field(default_factory=time.perf_counter)

    @classmethod
    def empty(cls, device: torch.device) -> Window:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device))


def train(config: TrainConfig) -> Path:
    """Train as ``config`` says; return the output checkpoint (released layout) or LoRA adapter folder."""
    return run_training(config).output


def run_training(config: TrainConfig) -> TrainingRun:
    """Setup, the loop, the final evaluation and save; the order of the setup calls fixes the RNG use."""
    config.validate()
    output = Path(config.output_dir)
    check_output_dir(config, output)
    accelerator = setup_accelerator(config, output)
    loaded, module = setup_model(config, accelerator)
    train_loader, eval_loader = setup_data(config, loaded, accelerator, output)
    optimizer, trained = setup_optimizer(config, module)
    module, optimizer, train_loader = accelerator.prepare(module, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = config.max_steps or steps_per_epoch * config.num_epochs
    scheduler = setup_scheduler(config, accelerator, optimizer, total_steps)
    progress, start_from = setup_progress(config, accelerator, output, len(train_loader))
    logger = RunLogger(accelerator, output, config, resumed_at=progress.step if start_from else None)
    logger.info(f"trainable parameters: {trained / 1e6:.2f}M ({config.method}); {total_steps} optimizer steps "
                f"({steps_per_epoch} per epoch); " + (f"resuming at step {progress.step} from {start_from}"
                                                      if start_from else "starting at step 0"))  # fmt: skip

    bar = tqdm(total=total_steps, initial=progress.step, disable=not accelerator.is_main_process, desc="train")
    set_train_mode(module, accelerator)
    window = Window.empty(accelerator.device)
    grad_norm = None
    while progress.step < total_steps:
        for batch in epoch_batches(accelerator, train_loader, progress):
            # Randomness (dropout) depends only on (seed, step, micro-batch, process): resume reproduces it.
            torch.manual_seed(hash((config.seed, progress.step, progress.batches, accelerator.process_index)) % 2**63)
            tokens = batch.pop("num_tokens")
            batch.pop("num_label_tokens")
            with accelerator.accumulate(module):
                loss = module(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(module.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            progress.batches += 1
            window.loss += loss.detach().float()
            window.tokens += tokens.to(accelerator.device)
            window.micro += 1
            if not accelerator.sync_gradients:
                continue  # still accumulating: no optimizer step yet

            lr = scheduler.get_last_lr()[0]  # the rate this step used
            scheduler.step()
            progress.step += 1
            bar.update(1)
            if progress.step % config.log_every == 0 or progress.step == total_steps:
                log_window(accelerator, logger, bar, window, progress, lr, grad_norm)
                window = Window.empty(accelerator.device)
            if eval_loader is not None and config.eval_every and progress.step % config.eval_every == 0:
                logger.log(progress.step, {"eval_loss": evaluate(accelerator, module, eval_loader)})
            if config.save_every and progress.step % config.save_every == 0 and progress.step < total_steps:
                save_checkpoint(accelerator, config, output, progress)
            if progress.step >= total_steps:
                break
        else:
            progress = Progress(progress.step, progress.epoch + 1, 0)
    bar.close()

    if eval_loader is not None and not (config.eval_every and progress.step % config.eval_every == 0):
        logger.log(progress.step, {"eval_loss": evaluate(accelerator, module, eval_loader)})
    final = save_final(accelerator, module, config, loaded, output)
    logger.info(f"saved {'LoRA adapter' if config.method == 'lora' else 'checkpoint'} to {final}")
    accelerator.end_training()
    return TrainingRun(final, accelerator.unwrap_model(module).eval(), progress)


def setup_accelerator(config: TrainConfig, output: Path) -> Accelerator:
    """Accelerator, seed, and the output folder with the resolved config (printed and saved)."""
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=trackers(config) or None,
        project_dir=str(output),
    )
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        print(f"llamavid training config ({accelerator.num_processes} process(es), {accelerator.distributed_type}):\n"
              + config.to_yaml(), flush=True)  # fmt: skip
    return accelerator


def setup_model(config: TrainConfig, accelerator: Accelerator) -> tuple[LoadedLlamaVid, TrainingModule]:
    """The checkpoint with what trains made trainable. DeepSpeed/FSDP place (and shard) it at prepare()."""
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    loaded = load_llamavid(
        config.base, vision_tower=config.vision_tower, qformer=config.qformer,
        qformer_tokenizer=config.qformer_tokenizer, dtype=torch_dtype(config.load_dtype),
        device="cpu" if sharded else accelerator.device, attn_implementation=config.attn_implementation,
    )  # fmt: skip
    model = configure_trainable(loaded.model, config)
    if config.load_dtype != "float32":
        upcast_trainable(model)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return loaded, TrainingModule(model)


def setup_data(
    config: TrainConfig, loaded: LoadedLlamaVid, accelerator: Accelerator, output: Path
) -> tuple[DataLoader, DataLoader | None]:
    """Loaders of the train and evaluation sets; lengths are checked here, over-long records listed."""
    tokens_per_frame = loaded.model.config.tokens_per_frame
    train_set, eval_set, skipped = load_datasets(config, loaded.tokenizer, loaded.image_processor, tokens_per_frame)
    if accelerator.is_main_process:
        (output / "skipped_examples.json").write_text(json.dumps(skipped, indent=1), encoding="utf-8")
        print(
            f"data: {len(train_set)} training examples, {len(eval_set or [])} evaluation examples, "
            f"{len(skipped)} skipped as longer than max_length={config.max_length} (skipped_examples.json)"
        )
    loader_args = {"batch_size": config.per_device_batch_size, "collate_fn": Collator(loaded.qformer_tokenizer),
                   "num_workers": config.num_workers, "pin_memory": torch.cuda.is_available()}  # fmt: skip
    train_loader = DataLoader(train_set, sampler=EpochShuffleSampler(len(train_set), config.seed), **loader_args)
    eval_loader = DataLoader(eval_set, shuffle=False, **loader_args) if eval_set else None
    return train_loader, eval_loader


def setup_optimizer(config: TrainConfig, module: TrainingModule) -> tuple[torch.optim.Optimizer, int]:
    """AdamW with no decay on biases and norms (as transformers' Trainer); also the trainable count."""
    named = list(trainable_parameters(module))
    groups = [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas),
                                  eps=config.adam_epsilon)  # fmt: skip
    return optimizer, sum(p.numel() for _, p in named)


def setup_scheduler(config: TrainConfig, accelerator: Accelerator, optimizer, total_steps: int):
    """Cosine schedule with warmup on the prepared optimizer, stepped once per optimizer step (not
    through prepare(), which would step it once per process); saved with each checkpoint."""
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    accelerator.register_for_checkpointing(scheduler)
    keep_trainable_only(accelerator)
    return scheduler


def setup_progress(
    config: TrainConfig, accelerator: Accelerator, output: Path, batches_per_epoch: int
) -> tuple[Progress, Path | None]:
    """Where to start: step 0, or the state of the checkpoint ``resume`` names (next epoch if it was complete)."""
    start_from = resume_dir(config, output)
    if start_from is None:
        return Progress(), None
    progress = load_checkpoint(accelerator, start_from)
    if progress.batches >= batches_per_epoch:
        progress = Progress(progress.step, progress.epoch + 1, 0)
    return progress, start_from


def epoch_batches(accelerator: Accelerator, train_loader: DataLoader, progress: Progress):
    """This epoch's batches in the seeded order; a run resumed mid-epoch skips those already consumed."""
    train_loader.set_epoch(progress.epoch)
    if not progress.batches:
        return train_loader
    skipped = accelerator.skip_first_batches(train_loader, progress.batches)
    skipped.set_epoch(progress.epoch)
    return skipped


def log_window(accelerator, logger: RunLogger, bar, window: Window, progress: Progress, lr: float, grad_norm) -> None:
    """One log row: loss averaged and tokens summed over processes since the last row."""
    loss_mean = accelerator.reduce(window.loss / window.micro, "mean").item()
    tokens_all = accelerator.reduce(window.tokens, "sum").item()
    seconds = time.perf_counter() - window.since
    logger.log(progress.step, {
        "epoch": progress.epoch, "loss": loss_mean, "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "tokens_per_s": tokens_all / seconds, "seconds": seconds,
    })  # fmt: skip
    bar.set_postfix(loss=f"{loss_mean:.4f}", lr=f"{lr:.2e}")


def set_train_mode(module: torch.nn.Module, accelerator: Accelerator) -> None:
    """Train mode (dropout on) everywhere except the frozen vision tower."""
    module.train()
    module_base(accelerator.unwrap_model(module)).vision_tower.eval()


@torch.no_grad()
def evaluate(accelerator: Accelerator, module: torch.nn.Module, loader: DataLoader) -> float:
    """Loss over every answer token of the evaluation set (token-weighted across batches and processes)."""
    module.eval()
    total = torch.zeros((), device=accelerator.device)
    count = torch.zeros((), device=accelerator.device)
    for batch in loader:
        batch.pop("num_tokens")
        targets = batch.pop("num_label_tokens").to(accelerator.device)
        total += module(**batch).loss.float() * targets
        count += targets
    set_train_mode(module, accelerator)
    return (accelerator.reduce(total, "sum") / accelerator.reduce(count, "sum").clamp(min=1)).item()
