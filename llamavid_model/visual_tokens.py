"""LLaMA-VID's per-frame token generation: one text-guided context token + pooled content tokens.

The Q-Former is transformers' ``InstructBlipQFormerModel``: like LAVIS's InstructBLIP Q-Former it
appends the instruction tokens to the learned queries in self-attention, cross-attends (queries
only) to the frame features every ``cross_attention_frequency`` layers, and has separate
feed-forward weights for query and text positions.

Each (question, frame) pair runs the Q-Former, but the cross-attention's keys and values depend
on the frame alone: :class:`FrameSharedCrossAttention` computes them (and the input layer norm)
once per frame, instead of once per pair (26 questions x 10 frames per MSVD video: 26x less of that
work). The pairs are laid out frame by frame (:func:`pair_layout`), so that the queries of every
question about a frame are one block that attends to that frame's keys once: no per-pair copy of
keys, values or patches is made. :class:`DenseSplitQFormerLayer`
copies the query and text parts of each layer into dense tensors once, instead of letting every
linear layer and residual add read them as strided views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class FrameGroup:
    """Frames that ``questions`` questions each ask about: its pairs are ``questions * len(frames)``
    consecutive rows, frame by frame (the questions of one frame next to each other)."""

    questions: int
    frames: torch.Tensor  # distinct-frame indices, on the features' device


@dataclass(frozen=True)
class PairLayout:
    """The (question, frame) pairs of a batch in the order the Q-Former runs them, by :class:`FrameGroup`."""

    frame_index: torch.Tensor  # per pair, its distinct frame
    item_index: torch.Tensor  # per pair, its question
    groups: list[FrameGroup]
    item_major: torch.Tensor  # rows of this layout in item order (each item's frames in order)


def pair_layout(segments: Sequence[tuple[int, int]], device: torch.device) -> PairLayout:
    """Lay out the pairs of ``segments`` (per item ``(first frame, count)``) frame by frame, items that
    share a segment side by side, segments grouped by how many items share them. Built on the host and
    copied without blocking (reading a device tensor back would make the host wait for the vision tower)."""
    table = torch.tensor(segments, dtype=torch.long).view(-1, 2)
    distinct, segment_of, sharing = torch.unique(table, dim=0, return_inverse=True, return_counts=True)
    counts = table[:, 1]
    item = torch.repeat_interleave(torch.arange(table.shape[0]), counts)  # item-major pairs
    offset = torch.arange(item.shape[0]) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    questions = sharing[segment_of[item]]
    # sorted by: how many items share the segment, the segment, the frame in it, the item
    key = (questions * distinct.shape[0] + segment_of[item]) * int(counts.max()) + offset
    order = (key * table.shape[0] + item).argsort()
    item_major = torch.empty_like(order)
    item_major[order] = torch.arange(order.shape[0])
    frames = (table[item, 0] + offset)[order]
    sizes = torch.unique_consecutive(questions[order], return_counts=True)
    group_frames, start = [], 0
    for shared, pairs in zip(*(part.tolist() for part in sizes), strict=True):
        group_frames.append(frames[start : start + pairs : shared])  # one pair in `shared` is a new frame
        start += pairs
    on_device = to_device(torch.stack([frames, item[order], item_major]), device)
    parts = to_device(torch.cat(group_frames), device).split([part.shape[0] for part in group_frames])
    groups = [FrameGroup(shared, part) for shared, part in zip(sizes[0].tolist(), parts, strict=True)]
    return PairLayout(on_device[0], on_device[1], groups, on_device[2])


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
        layout: PairLayout,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One context token per (question, frame) pair in ``layout``'s order, ``[pairs, 1, width]``.

        ``features`` (with CLS) and ``keys`` (projected patches) are per distinct frame;
        ``input_ids``/``attention_mask`` are the pairs' questions.
        """
        queries = self.query_tokens.expand(layout.frame_index.shape[0], -1, -1)
        query_mask = torch.ones(queries.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        # The groups stay set after the call: gradient checkpointing recomputes these layers during
        # backward, after this method returned, and must see the same layout. Every call sets them first.
        for module in self._cross_attentions:
            module.frame_groups = layout.groups
        mask = torch.cat([query_mask, attention_mask], dim=1)
        qformer_out = self.qformer(
            input_ids=input_ids,
            attention_mask=_prepared_mask(mask, self.qformer.config._attn_implementation, queries.dtype),
            query_embeds=queries,
            encoder_hidden_states=self.qformer_input_norm(features),  # once per frame
        ).last_hidden_state[:, : queries.shape[1]]
        text_q = self.query_projector(qformer_out)
        patches = self._patches(features)
        context = []
        for group, group_q in zip(layout.groups, _group_rows(text_q, layout.groups), strict=True):
            # every query of every question about a frame against that frame's keys, as one block
            scores = group_q @ keys.index_select(0, group.frames).transpose(-1, -2) / patches.shape[-1] ** 0.5
            pooled = scores.softmax(dim=-1) @ patches.index_select(0, group.frames)
            context.append(pooled.reshape(-1, *text_q.shape[1:]).mean(dim=1, keepdim=True))
        return self.context_projector(torch.cat(context))

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
        layout = pair_layout(segments, device)
        keys = self.key_projector(self._patches(features))
        items = layout.item_index
        context = self.context_tokens(features, keys, layout, input_ids[items], attention_mask[items])
        # back to item order: each item's frames in order, a context token then the frame's content tokens
        context = context[layout.item_major]
        content = self.content_tokens(features)[layout.frame_index[layout.item_major]]
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


def _group_rows(rows: torch.Tensor, groups: Sequence[FrameGroup]) -> list[torch.Tensor]:
    """Pair rows ``[pairs, queries, width]`` (layout order) -> per group ``[frames, questions * queries,
    width]`` views: the queries of all questions about one frame stacked."""
    sizes = [group.questions * group.frames.shape[0] for group in groups]
    return [
        part.view(group.frames.shape[0], -1, rows.shape[-1])
        for group, part in zip(groups, rows.split(sizes), strict=True)
    ]


class FrameSharedCrossAttention(InstructBlipQFormerMultiHeadAttention):
    """Q-Former cross-attention whose ``encoder_hidden_states`` rows are distinct frames.

    While ``frame_groups`` is set, batch rows are (question, frame) pairs in :class:`PairLayout` order:
    keys and values are projected once per frame, and the queries of all questions about a frame
    attend to them as one block (cross-attention has no mask, so each query's result is the same as
    alone). With ``frame_groups`` unset it is the library's module (rows of ``encoder_hidden_states``
    are the batch rows).
    """

    frame_groups: list[FrameGroup] | None = None

    def forward(
        self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None, **kwargs
    ):
        if self.frame_groups is None or encoder_hidden_states is None:
            return super().forward(
                hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, **kwargs
            )
        if encoder_attention_mask is not None:
            raise ValueError("frame-shared cross-attention attends to every patch; pass no encoder_attention_mask")
        keys, values = self.key(encoder_hidden_states), self.value(encoder_hidden_states)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        outputs = []
        for group, queries in zip(
            self.frame_groups, _group_rows(self.query(hidden_states), self.frame_groups), strict=True
        ):
            output, _ = attention(
                self,
                self._heads(queries),
                self._heads(keys.index_select(0, group.frames)),
                self._heads(values.index_select(0, group.frames)),
                None,
                dropout=0.0 if not self.training else self.attention_dropout,
                scaling=self.scaling,
                **kwargs,
            )
            outputs.append(output.reshape(-1, hidden_states.shape[1], keys.shape[-1]))
        # no attention weights: one pair's are spread over its group's block
        return torch.cat(outputs), None

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
