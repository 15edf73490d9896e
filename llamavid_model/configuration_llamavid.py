"""Configuration of LLaMA-VID, reading the released ``config.json`` keys unchanged.

The released checkpoints store a flat Llama config (``model_type: llava``) plus LLaMA-VID keys
(``mm_vision_tower``, ``bert_type``, ``compress_type`` ...). The sizes of the EVA-ViT-G tower and
of the Q-Former are not in that file (they come from the LAVIS weight files); we keep them as
``vision_config`` / ``qformer_config`` sub-configs, filled in at load time from the weights, and
saved when we write a checkpoint ourselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, PreTrainedConfig
from transformers.models.instructblip.configuration_instructblip import (
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
)

#: Architecture name the original repository writes; we write it too so saved checkpoints stay
#: loadable by the original code.
RELEASED_ARCHITECTURE = "LlavaLlamaAttForCausalLM"
RELEASED_MODEL_TYPE = "llava"

SUPPORTED_BERT_TYPES = ("qformer_pretrain", "qformer_pretrain_freeze", "qformer_pretrain_freeze_all")
SUPPORTED_PROJECTORS = ("linear", "mlp2x_gelu")


@strict
class LlamaVidConfig(LlamaConfig):
    """Llama config + the LLaMA-VID keys of the released ``config.json``."""

    model_type = "llamavid"
    sub_configs = {"vision_config": InstructBlipVisionConfig, "qformer_config": InstructBlipQFormerConfig}

    mm_vision_tower: str | None = None
    image_processor: str | None = None
    mm_hidden_size: int = 1408
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    mm_projector_type: str = "mlp2x_gelu"
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    image_aspect_ratio: str | None = "pad"
    bert_type: str = "qformer_pretrain"
    num_query: int = 32
    compress_type: str | None = "mean"
    max_token: int = 2048
    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if not isinstance(self.vision_config, InstructBlipVisionConfig):
            self.vision_config = InstructBlipVisionConfig(**(self.vision_config or {}))
        if not isinstance(self.qformer_config, InstructBlipQFormerConfig):
            self.qformer_config = InstructBlipQFormerConfig(**(self.qformer_config or {}))
        super().__post_init__(**kwargs)
        self.validate_llamavid()

    def validate_llamavid(self) -> None:
        """Reject released-config values this implementation does not compute, naming the key."""
        if self.bert_type not in SUPPORTED_BERT_TYPES:
            raise ValueError(
                f"config.json: bert_type={self.bert_type!r} is not supported (supported: {SUPPORTED_BERT_TYPES}); "
                "every released LLaMA-VID checkpoint uses 'qformer_pretrain'."
            )
        if self.mm_projector_type not in SUPPORTED_PROJECTORS:
            raise ValueError(
                f"config.json: mm_projector_type={self.mm_projector_type!r} is not supported "
                f"(supported: {SUPPORTED_PROJECTORS})."
            )
        if self.mm_hidden_size != self.vision_config.hidden_size:
            raise ValueError(
                f"config.json: mm_hidden_size={self.mm_hidden_size} but the EVA-ViT-G tower is "
                f"{self.vision_config.hidden_size} wide; LLaMA-VID's Q-Former path needs them equal."
            )
        compress = self.compress_type
        if compress is not None and compress != "mean" and not compress.startswith("grid:"):
            raise ValueError(f"config.json: compress_type={compress!r}; expected 'mean', 'grid:N' or null.")
        if self.mm_use_im_start_end:
            raise ValueError("config.json: mm_use_im_start_end=true is not supported (no released checkpoint uses it).")

    @property
    def content_tokens_per_frame(self) -> int:
        """Content tokens per frame after pooling (``compress_type``)."""
        patches = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        if self.compress_type is None:
            return patches + (0 if self.mm_vision_select_feature == "patch" else 1)
        if self.compress_type == "mean":
            return 1
        grid = int(self.compress_type.split("grid:")[-1])
        return grid * grid

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame: one context token + the content tokens."""
        return 1 + self.content_tokens_per_frame

    @classmethod
    def from_released(cls, checkpoint_dir: str | Path, **overrides: Any) -> LlamaVidConfig:
        """Read a released (or our own) ``config.json`` whatever its ``model_type``."""
        path = Path(checkpoint_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: `pretrained=` must point at a LLaMA-VID checkpoint folder.")
        values = json.loads(path.read_text())
        for key in ("model_type", "transformers_version", "_name_or_path", "architectures"):
            values.pop(key, None)
        if "torch_dtype" in values:
            values["dtype"] = values.pop("torch_dtype")
        if values.get("rope_scaling") is None:
            values.pop("rope_scaling", None)
        values.update(overrides)
        return cls(**values)

    def to_released_dict(self) -> dict[str, Any]:
        """The ``config.json`` we write: released keys, released architecture name, plus the sub-configs."""
        values = self.to_dict()
        values["model_type"] = RELEASED_MODEL_TYPE
        values["architectures"] = [RELEASED_ARCHITECTURE]
        return values
