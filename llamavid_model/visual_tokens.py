"""LLaMA-VID's per-frame token generation: one text-guided context token + pooled content tokens.

The Q-Former is transformers' ``InstructBlipQFormerModel``: like LAVIS's InstructBLIP Q-Former it
appends the instruction tokens to the learned queries in self-attention, cross-attends (queries
only) to the frame features every ``cross_attention_frequency`` layers, and has separate
feed-forward weights for query and text positions.

Each (question, frame) pair runs the Q-Former, but the cross-attention's keys and values depend
on the frame alone: :class:`FrameSharedCrossAttention` computes them (and the input layer norm)
once per frame and lets every question about that frame read them, instead of once per pair
(26 questions x 10 frames per MSVD video: 26x less of that work). :class:`DenseSplitQFormerLayer`
copies the query and text parts of each layer into dense tensors once, instead of letting every
linear layer and residual add read them as strided views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.instructblip.modeling_instructblip import (
    InstructBlipQFormerLayer,
    InstructBlipQFormerModel,
    InstructBlipQFormerMultiHeadAttention,
    eager_attention_forward,
)
from transformers.pytorch_utils import apply_chunking_to_forward

from llamavid_eval.generation.decoding import to_device
from llamavid_eval.model.configuration_llamavid import LlamaVidConfig


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
        self._cross_attentions = _share_cross_attention_by_frame(self.qformer)
        for layer in self.qformer.encoder.layer:
            layer.__class__ = DenseSplitQFormerLayer  # same parameters; only forward differs
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
        frame_index: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One context token per (question, frame) pair, ``[pairs, 1, width]``.

        ``features`` (with CLS) and ``keys`` (projected patches) are per distinct frame;
        ``frame_index[i]`` is pair ``i``'s frame and ``input_ids``/``attention_mask`` its question.
        """
        queries = self.query_tokens.expand(frame_index.shape[0], -1, -1)
        query_mask = torch.ones(queries.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        # The index stays set after the call: gradient checkpointing recomputes these layers during
        # backward, after this method returned, and must see the same index. Every call sets it first.
        for module in self._cross_attentions:
            module.frame_index = frame_index
        mask = torch.cat([query_mask, attention_mask], dim=1)
        qformer_out = self.qformer(
            input_ids=input_ids,
            attention_mask=_prepared_mask(mask, self.qformer.config._attn_implementation, queries.dtype),
            query_embeds=queries,
            encoder_hidden_states=self.qformer_input_norm(features),  # once per frame
        ).last_hidden_state[:, : queries.shape[1]]
        text_q = self.query_projector(qformer_out)
        patches = self._patches(features)
        weights = (text_q @ keys[frame_index].transpose(-1, -2) / patches.shape[-1] ** 0.5).softmax(dim=-1)
        context = (weights @ patches[frame_index]).mean(dim=1, keepdim=True)
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
        counts = [count for _, count in segments]
        if min(counts) <= 0:
            raise ValueError("every item needs at least one frame (got a segment with 0 frames)")
        # index tensors built on the host and copied without blocking (a blocking copy, or reading a
        # device tensor back, would make the host wait for the vision tower queued before this)
        frame_index = torch.cat([torch.arange(start, start + count) for start, count in segments])
        item_index = torch.repeat_interleave(torch.arange(len(segments)), torch.tensor(counts))
        frame_index = to_device(frame_index, device)
        item_index = to_device(item_index, device)

        keys = self.key_projector(self._patches(features))
        context = self.context_tokens(features, keys, frame_index, input_ids[item_index], attention_mask[item_index])
        content = self.content_tokens(features)[frame_index]
        tokens = torch.cat([context, content], dim=1)
        return [chunk.flatten(0, 1) for chunk in tokens.split(counts)]


def _prepared_mask(mask: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The Q-Former's padding mask in the 4D form its attention takes, as transformers would build
    it: given the 2D mask, transformers first asks whether any position is padded (``mask.all()``),
    which makes the host wait for the GPU in every batch (``benchmarks/timeline.py --sync-debug``)."""
    if implementation == "sdpa":
        return mask[:, None, None, :].bool()
    if implementation == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask == 0, torch.finfo(dtype).min)[
            :, None, None, :
        ]
    return mask  # flash attention takes the 2D mask


class FrameSharedCrossAttention(InstructBlipQFormerMultiHeadAttention):
    """Q-Former cross-attention whose ``encoder_hidden_states`` rows are distinct frames.

    While ``frame_index`` is set, batch row ``i`` attends to frame ``frame_index[i]``: keys and
    values are projected once per frame and gathered per row. With ``frame_index`` unset it is
    the library's module (rows of ``encoder_hidden_states`` are the batch rows).
    """

    frame_index: torch.Tensor | None = None

    def forward(
        self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, **kwargs
    ):
        if self.frame_index is None or encoder_hidden_states is None:
            return super().forward(
                hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, **kwargs
            )
        if encoder_attention_mask is not None:
            raise ValueError("frame-shared cross-attention attends to every patch; pass no encoder_attention_mask")
        query = self._heads(self.query(hidden_states))
        # gathered while contiguous (a fast row copy; on the head-split view it was a 10 ms element gather)
        key = self._heads(self.key(encoder_hidden_states).index_select(0, self.frame_index))
        value = self._heads(self.value(encoder_hidden_states).index_select(0, self.frame_index))
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, weights = attention(
            self,
            query,
            key,
            value,
            None,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        return output.reshape(*output.shape[:2], -1).contiguous(), weights

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        """``[rows, tokens, heads * size]`` -> ``[rows, heads, tokens, size]``."""
        return states.view(*states.shape[:-1], -1, self.attention_head_size).transpose(1, 2)


def _share_cross_attention_by_frame(qformer: InstructBlipQFormerModel) -> list[FrameSharedCrossAttention]:
    """Swap every cross-attention module for a :class:`FrameSharedCrossAttention` holding the same
    parameters (parameter names unchanged, so released weights load as before)."""
    swapped = []
    for layer in qformer.encoder.layer:
        if getattr(layer, "has_cross_attention", False):
            old = layer.crossattention.attention
            new = FrameSharedCrossAttention(old.config, is_cross_attention=True)
            new.load_state_dict(old.state_dict())
            layer.crossattention.attention = new.to(next(old.parameters()).device)
            swapped.append(new)
    return swapped


class DenseSplitQFormerLayer(InstructBlipQFormerLayer):
    """A Q-Former layer whose query and text parts are split into dense tensors.

    The library's layer hands ``attention_output[:, :query_length]`` (a strided view) to the
    cross-attention and feed-forward blocks, so their linear layers copy it and their residual adds
    run the slow strided kernel: 28 of the 161 ms of a 512-question batch's Q-Former on an H100
    (``profile_batch.py`` record ``20261206T043433Z``). Same operations on the same values otherwise.
    """

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        query_length=0,
        **kwargs,
    ):
        attention_output = self.attention(hidden_states, attention_mask=attention_mask, **kwargs)
        if query_length == 0:
            return self._feed_forward(self.feed_forward_chunk, attention_output)
        queries = attention_output[:, :query_length].contiguous()
        if self.has_cross_attention:
            if encoder_hidden_states is None:
                raise ValueError("encoder_hidden_states must be given for cross-attention layers")
            queries = self.crossattention(
                queries,
                attention_mask=attention_mask,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
                **kwargs,
            )
        output = self._feed_forward(self.feed_forward_chunk_query, queries)
        if attention_output.shape[1] == query_length:
            return output
        text = self._feed_forward(self.feed_forward_chunk, attention_output[:, query_length:].contiguous())
        return torch.cat([output, text], dim=1)

    def _feed_forward(self, block, states: torch.Tensor) -> torch.Tensor:
        return apply_chunking_to_forward(block, self.chunk_size_feed_forward, self.seq_len_dim, states)
