"""LLaMA-VID's per-frame token generation: one text-guided context token + pooled content tokens.

The Q-Former is transformers' ``InstructBlipQFormerModel``: like LAVIS's InstructBLIP Q-Former it
appends the instruction tokens to the learned queries in self-attention, cross-attends (queries
only) to the frame features every ``cross_attention_frequency`` layers, and has separate
feed-forward weights for query and text positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from llamavid_eval.model.configuration_llamavid import LlamaVidConfig
from torch import nn
from transformers.models.instructblip.modeling_instructblip import InstructBlipQFormerModel


def build_content_projector(config: LlamaVidConfig) -> nn.Module:
    """``mm_projector``: frame width -> LLM width (``linear`` or ``mlp2x_gelu``)."""
    if config.mm_projector_type == "linear":
        return nn.Linear(config.mm_hidden_size, config.hidden_size)
    return nn.Sequential(
        nn.Linear(config.mm_hidden_size, config.hidden_size),
        nn.GELU(),
        nn.Linear(config.hidden_size, config.hidden_size),
    )


class VisualTokenizer(nn.Module):
    """Frame features + a question -> ``[context, content...]`` tokens per frame at the LLM width.

    Attribute names map one-to-one to the released ``model.vlm_att_*`` / ``model.mm_projector``
    weights (see ``weights.py``).
    """

    def __init__(self, config: LlamaVidConfig) -> None:
        super().__init__()
        self.config = config
        qformer_config = config.qformer_config
        qformer_config.encoder_hidden_size = config.mm_hidden_size
        self.qformer = InstructBlipQFormerModel(qformer_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query, qformer_config.hidden_size))
        self.qformer_input_norm = nn.LayerNorm(config.mm_hidden_size)
        self.query_projector = nn.Linear(qformer_config.hidden_size, config.mm_hidden_size)
        self.key_projector = nn.Linear(config.mm_hidden_size, config.mm_hidden_size)
        self.context_projector = nn.Linear(config.mm_hidden_size, config.hidden_size)
        self.content_projector = build_content_projector(config)

    def _patches(self, features: torch.Tensor) -> torch.Tensor:
        """Drop the CLS token when ``mm_vision_select_feature == 'patch'`` (as the original does)."""
        if self.config.mm_vision_select_feature == "patch" and features.shape[1] % 2 == 1:
            return features[:, 1:]
        return features

    def _pool(self, patches: torch.Tensor) -> torch.Tensor:
        compress = self.config.compress_type
        if compress is None:
            return patches
        if compress == "mean":
            return patches.mean(dim=1, keepdim=True)
        grid = int(compress.split("grid:")[-1])
        side = int(patches.shape[1] ** 0.5)
        square = patches.reshape(patches.shape[0], side, side, -1).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(square, kernel_size=side // grid, stride=side // grid)
        return pooled.permute(0, 2, 3, 1).flatten(1, 2)

    def content_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Question-independent content tokens, ``[frames, content_tokens_per_frame, width]``."""
        return self.content_projector(self._pool(self._patches(features)))

    def context_tokens(
        self,
        features: torch.Tensor,
        keys: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One context token per (question, frame) pair, ``[pairs, 1, width]``.

        ``features`` are the pairs' full frame features (with CLS) and ``keys`` the pairs' projected
        patches; both are gathered per pair by the caller so that frames are projected only once.
        """
        queries = self.query_tokens.expand(features.shape[0], -1, -1)
        query_mask = torch.ones(queries.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        qformer_out = self.qformer(
            input_ids=input_ids,
            attention_mask=torch.cat([query_mask, attention_mask], dim=1),
            query_embeds=queries,
            encoder_hidden_states=self.qformer_input_norm(features),
            encoder_attention_mask=torch.ones(features.shape[:2], dtype=torch.long, device=features.device),
        ).last_hidden_state[:, : queries.shape[1]]
        text_q = self.query_projector(qformer_out)
        patches = self._patches(features)
        weights = (text_q @ keys.transpose(-1, -2) / patches.shape[-1] ** 0.5).softmax(dim=-1)
        context = (weights @ patches).mean(dim=1, keepdim=True)
        return self.context_projector(context)

    def forward(
        self,
        features: torch.Tensor,
        segments: Sequence[tuple[int, int]],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Visual tokens for each item of a batch.

        Args:
            features: vision-tower output for every distinct frame, ``[frames, tokens, D]``.
            segments: per item, ``(first frame, frame count)`` into ``features``; items that ask
                about the same video point at the same frames, so each frame is encoded once.
            input_ids / attention_mask: the Q-Former tokenisation of each item's question.

        Returns:
            per item, ``[frame count * tokens_per_frame, width]`` ordered frame by frame as
            ``[context_0, content_0..., context_1, content_1..., ...]``.
        """
        device = features.device
        counts = torch.tensor([count for _, count in segments], device=device)
        if bool((counts <= 0).any()):
            raise ValueError("every item needs at least one frame (got a segment with 0 frames)")
        frame_index = torch.cat([torch.arange(start, start + count, device=device) for start, count in segments])
        item_index = torch.repeat_interleave(torch.arange(len(segments), device=device), counts)

        keys = self.key_projector(self._patches(features))
        context = self.context_tokens(
            features[frame_index], keys[frame_index], input_ids[item_index], attention_mask[item_index]
        )
        content = self.content_tokens(features)[frame_index]
        tokens = torch.cat([context, content], dim=1)
        return [chunk.flatten(0, 1) for chunk in tokens.split(counts.tolist())]
