"""EVA-ViT-G, the frozen vision tower of LLaMA-VID, built from transformers' InstructBLIP modules.

``InstructBlipVisionModel`` computes the same blocks as LAVIS's EVA-ViT-G (separate q/v biases with
a zero key bias, exact GELU, LayerNorm eps 1e-6, CLS + absolute position embeddings) but ends with
``post_layernorm``. LLaMA-VID uses the output of the last block *without* a final norm (its own
``vlm_att_ln`` is applied only to the Q-Former input), so we compose the embeddings and encoder
directly instead of using the full model class.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.instructblip.configuration_instructblip import InstructBlipVisionConfig
from transformers.models.instructblip.modeling_instructblip import (
    InstructBlipEncoder,
    InstructBlipVisionEmbeddings,
)


class EvaVisionTower(nn.Module):
    """Frames ``[N, 3, H, W]`` -> features ``[N, 1 + (H/14)^2, 1408]`` (CLS first, no final norm)."""

    def __init__(self, config: InstructBlipVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = InstructBlipVisionEmbeddings(config)
        self.encoder = InstructBlipEncoder(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.embeddings.patch_embedding.weight.dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = self.config.image_size
        if pixel_values.shape[-2:] != (expected, expected):
            raise ValueError(
                f"vision tower expects {expected}x{expected} frames, got {tuple(pixel_values.shape[-2:])}; "
                "preprocess with the checkpoint's image processor (224 or 336)."
            )
        hidden = self.embeddings(pixel_values.to(self.dtype))
        return self.encoder(inputs_embeds=hidden).last_hidden_state
