"""Explicit weight-name mapping between the released files and our modules, and the file readers.

Three sources feed one model:
- the LLaMA-VID checkpoint (``pytorch_model-*.bin`` + index, or safetensors): the Llama weights
  under their usual names, and ``model.vlm_att_*`` / ``model.mm_projector.*`` for LLaMA-VID's parts;
- LAVIS ``eva_vit_g.pth``: the vision tower (a plain state dict);
- LAVIS ``instruct_blip_vicuna*_trimmed.pth``: ``{"model": {"Qformer.bert.*", "query_tokens",
  "ln_vision.*", ...}}``, used only where the checkpoint has no Q-Former (stage-1 initialisation),
  exactly as the original's ``initialize_attention_modules`` lets checkpoint weights win.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors

# Released checkpoint prefix -> our parameter prefix. Order matters: first match wins.
CHECKPOINT_TO_MODEL: tuple[tuple[str, str], ...] = (
    ("model.vlm_att_encoder.bert.", "visual_tokenizer.qformer."),
    ("model.vlm_att_query", "visual_tokenizer.query_tokens"),
    ("model.vlm_att_ln.", "visual_tokenizer.qformer_input_norm."),
    ("model.vlm_att_projector.", "visual_tokenizer.query_projector."),
    ("model.vlm_att_key_projector.", "visual_tokenizer.key_projector."),
    ("model.vlm_att_val_projector.", "visual_tokenizer.context_projector."),
    ("model.mm_projector.", "visual_tokenizer.content_projector."),
    ("model.", "model."),
    ("lm_head.", "lm_head."),
)

# LAVIS/BERT Q-Former sub-names -> transformers' InstructBlipQFormerModel sub-names.
QFORMER_RENAMES: tuple[tuple[str, str], ...] = (
    (".attention.self.", ".attention.attention."),
    (".crossattention.self.", ".crossattention.attention."),
    ("embeddings.LayerNorm.", "embeddings.layernorm."),
)

# Names in released files that hold nothing we load: the tower comes from the LAVIS file,
# rotary frequencies and BERT position ids are recomputed buffers, the BERT LM head is removed.
IGNORED_CHECKPOINT_KEYS = re.compile(
    r"^model\.vision_tower\.|rotary_emb\.inv_freq$|embeddings\.position_ids$|^model\.vlm_att_encoder\.cls\."
)

LAVIS_VISION_RENAMES: tuple[tuple[str, str], ...] = (
    ("cls_token", "embeddings.class_embedding"),
    ("pos_embed", "embeddings.position_embedding"),
    ("patch_embed.proj.", "embeddings.patch_embedding."),
    ("blocks.", "encoder.layers."),
    (".norm1.", ".layer_norm1."),
    (".norm2.", ".layer_norm2."),
    (".attn.qkv.", ".self_attn.qkv."),
    (".attn.proj.", ".self_attn.projection."),
)

VISION_PREFIX = "vision_tower."


class WeightFileError(ValueError):
    """A weight file is missing, unreadable, or does not match the model; the message says which."""


def _rename_qformer(name: str) -> str:
    for old, new in QFORMER_RENAMES:
        name = name.replace(old, new)
    return name


def checkpoint_key_to_model(name: str) -> str | None:
    """Released checkpoint name -> our parameter name (``None`` for names we deliberately skip)."""
    if IGNORED_CHECKPOINT_KEYS.search(name):
        return None
    for old, new in CHECKPOINT_TO_MODEL:
        if name.startswith(old):
            mapped = new + name[len(old) :]
            return _rename_qformer(mapped) if new == "visual_tokenizer.qformer." else mapped
    raise WeightFileError(f"unknown checkpoint weight {name!r}: not a Llama, vlm_att_* or mm_projector name")


def model_key_to_checkpoint(name: str) -> str:
    """Our parameter name -> released checkpoint name (used when saving in the released layout)."""
    for released, ours in CHECKPOINT_TO_MODEL:
        if name.startswith(ours):
            rest = name[len(ours) :]
            if ours == "visual_tokenizer.qformer.":
                for old, new in QFORMER_RENAMES:
                    rest = rest.replace(new, old)
            return released + rest
    raise WeightFileError(f"{name!r} has no released-checkpoint name (vision tower weights are not saved)")


def read_checkpoint(checkpoint_dir: Path) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """Yield ``(name, tensor, file)`` from sharded or single .bin / safetensors files."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = checkpoint_dir / index_name
        if index_path.is_file():
            weight_map = json.loads(index_path.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
            break
    else:
        files = [name for name in ("model.safetensors", "pytorch_model.bin") if (checkpoint_dir / name).is_file()]
        if not files:
            raise WeightFileError(
                f"no weights in {checkpoint_dir}: expected pytorch_model.bin.index.json + shards, "
                "pytorch_model.bin, model.safetensors(.index.json)"
            )
        files = files[:1]
    for file_name in files:
        path = checkpoint_dir / file_name
        for name, tensor in _read_tensor_file(path).items():
            yield name, tensor, path


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightFileError(f"weight file {path} is missing (named by the checkpoint's index)")
    try:
        if path.suffix == ".safetensors":
            return load_safetensors(str(path))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch/safetensors raise many types for a corrupt file
        raise WeightFileError(f"cannot read weight file {path}: {error}") from error


def read_lavis_vision(path: Path, image_size: int) -> dict[str, torch.Tensor]:
    """LAVIS ``eva_vit_g.pth`` -> ``vision_tower.*`` tensors, position embeddings resized to ``image_size``."""
    state = _read_tensor_file(path)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
        raise WeightFileError(f"{path} is not a LAVIS EVA-ViT-G state dict (no pos_embed / patch_embed.proj.weight)")
    mapped: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(".attn.q_bias"):
            prefix = name[: -len(".attn.q_bias")]
            v_bias = state[f"{prefix}.attn.v_bias"]
            # LAVIS adds a zero key bias at run time; transformers stores the concatenated bias.
            mapped[_rename_vision(f"{prefix}.attn.qkv.bias")] = torch.cat([tensor, torch.zeros_like(v_bias), v_bias])
        elif not name.endswith(".attn.v_bias"):
            mapped[_rename_vision(name)] = tensor
    patch = state["patch_embed.proj.weight"].shape[-1]
    key = VISION_PREFIX + "embeddings.position_embedding"
    mapped[key] = resize_position_embedding(mapped[key], image_size // patch)
    return mapped


def _rename_vision(name: str) -> str:
    for old, new in LAVIS_VISION_RENAMES:
        name = name.replace(old, new)
    return VISION_PREFIX + name


def resize_position_embedding(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubic resize of ``[1, 1 + g*g, D]`` to ``grid x grid`` (LAVIS's ``interpolate_pos_embed``)."""
    old_grid = int((pos_embed.shape[1] - 1) ** 0.5)
    if old_grid == grid:
        return pos_embed
    dtype = pos_embed.dtype
    cls_pos, patch_pos = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    patch_pos = patch_pos.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).flatten(1, 2)], dim=1).to(dtype)


def read_lavis_qformer(path: Path) -> dict[str, torch.Tensor]:
    """LAVIS InstructBLIP file -> ``visual_tokenizer.{qformer,query_tokens,qformer_input_norm}`` tensors."""
    state = _read_tensor_file(path)
    state = state.get("model", state)
    if "query_tokens" not in state:
        raise WeightFileError(f"{path} is not a LAVIS InstructBLIP checkpoint (no 'query_tokens' under 'model')")
    mapped = {"visual_tokenizer.query_tokens": state["query_tokens"]}
    for name, tensor in state.items():
        if name.startswith("Qformer.bert.") and not name.endswith("position_ids"):
            mapped["visual_tokenizer.qformer." + _rename_qformer(name[len("Qformer.bert.") :])] = tensor
        elif name.startswith("ln_vision."):
            mapped["visual_tokenizer.qformer_input_norm." + name[len("ln_vision.") :]] = tensor
    return mapped
