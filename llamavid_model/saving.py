"""Write a model in the released LLaMA-VID on-disk layout (what ``load_llamavid`` and the original read).

The vision tower is not written (released checkpoints keep it in the LAVIS file named by
``mm_vision_tower``); every other weight goes under its released name into ``pytorch_model-*.bin``
shards plus ``pytorch_model.bin.index.json``, or safetensors shards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from llamavid_eval.model.modeling_llamavid import LlamaVidForCausalLM
from llamavid_eval.model.weights import VISION_PREFIX, model_key_to_checkpoint

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def released_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our weights (a model's ``state_dict()``) under their released names, vision tower excluded."""
    return {
        model_key_to_checkpoint(name): tensor.detach().cpu().contiguous()
        for name, tensor in state.items()
        if not name.startswith(VISION_PREFIX)
    }


def save_released(
    model: LlamaVidForCausalLM,
    out_dir: str | Path,
    *,
    vision_tower_path: str | None = None,
    image_processor: str | None = None,
    max_shard_bytes: int = 5 * 1024**3,
    safetensors: bool = False,
    dtype: torch.dtype | None = None,
    tokenizer_from: str | Path | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save config + sharded weights; ``vision_tower_path`` is recorded as ``mm_vision_tower``.

    ``tokenizer_from`` (usually the base checkpoint) supplies the tokenizer and generation files,
    so the result is a complete checkpoint that ``pretrained=`` accepts. ``state_dict`` replaces
    ``model.state_dict()`` when the weights were gathered elsewhere (ZeRO-3 / FSDP shards).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = released_state_dict(model.state_dict() if state_dict is None else state_dict)
    if dtype is not None:
        state = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in state.items()}

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes

    stem, suffix = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, start=1):
        file_name = f"{stem}-{index:05d}-of-{len(shards):05d}.{suffix}"
        if safetensors:
            save_file(shard, str(out / file_name), metadata={"format": "pt"})
        else:
            torch.save(shard, out / file_name)
        weight_map.update(dict.fromkeys(shard, file_name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index_name = f"{stem}.{suffix}.index.json" if not safetensors else "model.safetensors.index.json"
    (out / index_name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))

    config = model.config.to_released_dict()
    if vision_tower_path is not None:
        config["mm_vision_tower"] = vision_tower_path
    if image_processor is not None:
        config["image_processor"] = image_processor
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    if tokenizer_from is not None:
        for name in TOKENIZER_FILES:
            source = Path(tokenizer_from) / name
            if source.is_file():
                shutil.copy(source, out / name)
    return out
