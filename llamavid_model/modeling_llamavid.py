"""LLaMA-VID on top of transformers' ``LlamaForCausalLM``.

The language model is the unchanged Llama class (so ``generate``, SDPA/flash attention, PEFT and
gradient checkpointing work as for any Llama); LLaMA-VID adds the frozen EVA-ViT-G tower and the
visual tokenizer, and replaces the single ``<image>`` placeholder (id ``-200``) of a prompt by the
visual tokens of all its frames before calling the language model with ``inputs_embeds``.

The vision tower is EVA-ViT-G built from transformers' InstructBLIP modules (:class:`EvaVisionTower`):
``InstructBlipVisionModel`` computes the same blocks as LAVIS's EVA-ViT-G (separate q/v biases with a
zero key bias, exact GELU, LayerNorm eps 1e-6, CLS + absolute position embeddings) but ends with
``post_layernorm``. LLaMA-VID uses the output of the last block *without* a final norm (its own
``vlm_att_ln`` is applied only to the Q-Former input), so the tower composes the embeddings and
encoder directly instead of using the full model class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.instructblip.configuration_instructblip import InstructBlipVisionConfig
from transformers.models.instructblip.modeling_instructblip import (
    InstructBlipEncoder,
    InstructBlipVisionEmbeddings,
)

from llamavid_eval.core.tokens import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llamavid_eval.generation.decoding import to_device
from llamavid_eval.model.configuration_llamavid import LlamaVidConfig
from llamavid_eval.model.visual_tokens import VisualTokenizer


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


@dataclass
class MultimodalInputs:
    """Language-model inputs after the visual tokens were spliced in (padded batch)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None = None


class LlamaVidForCausalLM(LlamaForCausalLM):
    """LLaMA-VID: ``LlamaForCausalLM`` + ``vision_tower`` + ``visual_tokenizer``."""

    config_class = LlamaVidConfig

    def __init__(self, config: LlamaVidConfig) -> None:
        super().__init__(config)
        self.vision_tower = EvaVisionTower(config.vision_config)
        self.visual_tokenizer = VisualTokenizer(config)
        self.vision_tower.requires_grad_(False)

    @torch.no_grad()
    def encode_frames(self, pixel_values: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Frozen tower features for ``[frames, 3, H, W]``, optionally in chunks to bound memory."""
        pixel_values = pixel_values.to(self.vision_tower.embeddings.patch_embedding.weight.device)
        if chunk_size is None or pixel_values.shape[0] <= chunk_size:
            return self.vision_tower(pixel_values)
        return torch.cat([self.vision_tower(chunk) for chunk in pixel_values.split(chunk_size)])

    def visual_tokens(
        self,
        features: torch.Tensor,
        segments: Sequence[tuple[int, int]],
        qformer_input_ids: torch.Tensor,
        qformer_attention_mask: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Per item ``[frames * tokens_per_frame, hidden]`` (see ``VisualTokenizer.forward``)."""
        features = features.to(self.visual_tokenizer.key_projector.weight.dtype)
        return self.visual_tokenizer(features, segments, qformer_input_ids, qformer_attention_mask)

    def splice_visual_tokens(
        self,
        input_ids: Sequence[torch.Tensor],
        visual: Sequence[torch.Tensor | None],
        labels: Sequence[torch.Tensor] | None = None,
        padding_side: str = "left",
    ) -> MultimodalInputs:
        """Replace each prompt's ``<image>`` id by its visual tokens and pad the batch.

        A prompt has at most one ``<image>`` (all frames of a video, or all images of a
        multi-image document, are one visual sequence, as in the original). Visual positions get
        ``IGNORE_INDEX`` labels. Left padding suits generation, right padding training.
        """
        embed = self.get_input_embeddings()
        layout = _splice_layout(input_ids, visual, labels, padding_side)
        device = embed.weight.device
        present = [tokens for tokens in visual if tokens is not None]
        text = embed(to_device(layout.token_ids, device))
        if present:
            # one gather for every visual token of the batch instead of a cat per row
            pool = torch.cat([tokens.to(device=device, dtype=text.dtype) for tokens in present])
            source = to_device(layout.visual_source, device)
            text = torch.where((source >= 0)[..., None], pool[source.clamp(min=0)], text)
        mask = to_device(layout.attention_mask, device)
        embeds = text * mask[..., None].to(text.dtype)  # padding positions are zeros
        out_labels = to_device(layout.labels, device) if layout.labels is not None else None
        return MultimodalInputs(embeds, mask, out_labels)

    def forward_multimodal(
        self,
        pixel_values: torch.Tensor,
        segments: Sequence[tuple[int, int]],
        qformer_input_ids: torch.Tensor,
        qformer_attention_mask: torch.Tensor,
        input_ids: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor] | None = None,
    ) -> CausalLMOutputWithPast:
        """Training/scoring forward: frames + prompts (+ labels) -> logits (and loss)."""
        features = self.encode_frames(pixel_values)
        visual = self.visual_tokens(features, segments, qformer_input_ids, qformer_attention_mask)
        batch = self.splice_visual_tokens(input_ids, visual, labels, padding_side="right")
        return self(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, labels=batch.labels)


@dataclass
class _SpliceLayout:
    """Per output position: the text id to embed, or the row of the batch's visual tokens (-1: text)."""

    token_ids: torch.Tensor
    visual_source: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


def _splice_layout(
    input_ids: Sequence[torch.Tensor],
    visual: Sequence[torch.Tensor | None],
    labels: Sequence[torch.Tensor] | None,
    padding_side: str,
) -> _SpliceLayout:
    """Index tensors (on the CPU) that place each row's text and visual tokens in a padded batch."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    rows = []
    for index, ids in enumerate(input_ids):
        ids = ids.cpu()
        places = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        if len(places) > 1:
            raise ValueError(f"prompt {index} has {len(places)} <image> placeholders; put all frames in one.")
        tokens = visual[index]
        if places and tokens is None:
            raise ValueError(f"prompt {index} has an <image> placeholder but no frames were given")
        if not places and tokens is not None:
            raise ValueError(f"prompt {index} has frames but no <image> placeholder")
        cut, count = (places[0], tokens.shape[0]) if places else (len(ids), 0)
        rows.append((ids, cut, count, len(ids) - len(places) + count))
    longest = max(length for *_, length in rows)
    token_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    source = torch.full((len(rows), longest), -1, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    out_labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
    offset = 0
    for index, (ids, cut, count, length) in enumerate(rows):
        start = longest - length if padding_side == "left" else 0
        before = slice(start, start + cut)
        visual_span = slice(start + cut, start + cut + count)
        after = slice(start + cut + count, start + length)
        token_ids[index, before], token_ids[index, after] = ids[:cut], ids[cut + 1 :]
        source[index, visual_span] = torch.arange(offset, offset + count)
        mask[index, start : start + length] = 1
        if out_labels is not None:
            row_labels = labels[index].cpu()
            out_labels[index, before], out_labels[index, after] = row_labels[:cut], row_labels[cut + 1 :]
        offset += count
    return _SpliceLayout(token_ids, source, mask, out_labels)
