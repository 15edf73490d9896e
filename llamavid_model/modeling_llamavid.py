"""LLaMA-VID on top of transformers' ``LlamaForCausalLM``.

The language model is the unchanged Llama class (so ``generate``, SDPA/flash attention, PEFT and
gradient checkpointing work as for any Llama); LLaMA-VID adds the frozen EVA-ViT-G tower and the
visual tokenizer, and replaces the single ``<image>`` placeholder (id ``-200``) of a prompt by the
visual tokens of all its frames before calling the language model with ``inputs_embeds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from llamavid_model.configuration_llamavid import LlamaVidConfig
from llamavid_model.vision import EvaVisionTower
from llamavid_model.visual_tokens import VisualTokenizer

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


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
        rows, label_rows = [], []
        for index, ids in enumerate(input_ids):
            ids = ids.to(embed.weight.device)
            places = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            if len(places) > 1:
                raise ValueError(f"prompt {index} has {len(places)} <image> placeholders; put all frames in one.")
            tokens = visual[index]
            if places and tokens is None:
                raise ValueError(f"prompt {index} has an <image> placeholder but no frames were given")
            if not places and tokens is not None:
                raise ValueError(f"prompt {index} has frames but no <image> placeholder")
            item_labels = labels[index].to(ids.device) if labels is not None else None
            if not places:
                rows.append(embed(ids))
                label_rows.append(item_labels)
                continue
            cut = places[0]
            tokens = tokens.to(device=embed.weight.device, dtype=embed.weight.dtype)
            rows.append(torch.cat([embed(ids[:cut]), tokens, embed(ids[cut + 1 :])]))
            if item_labels is not None:
                ignore = torch.full((tokens.shape[0],), IGNORE_INDEX, dtype=item_labels.dtype, device=ids.device)
                label_rows.append(torch.cat([item_labels[:cut], ignore, item_labels[cut + 1 :]]))
        return _pad_batch(rows, label_rows if labels is not None else None, padding_side)

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


def _pad_batch(
    rows: list[torch.Tensor], label_rows: list[torch.Tensor] | None, padding_side: str
) -> MultimodalInputs:
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    longest = max(row.shape[0] for row in rows)
    width, dtype, device = rows[0].shape[1], rows[0].dtype, rows[0].device
    embeds = torch.zeros(len(rows), longest, width, dtype=dtype, device=device)
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
    labels = None
    if label_rows is not None:
        labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long, device=device)
    for index, row in enumerate(rows):
        span = slice(longest - row.shape[0], longest) if padding_side == "left" else slice(0, row.shape[0])
        embeds[index, span] = row
        mask[index, span] = 1
        if labels is not None:
            labels[index, span] = label_rows[index]
    return MultimodalInputs(embeds, mask, labels)
