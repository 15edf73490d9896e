"""Batched greedy/sampled decoding for short video-QA answers: shared prompt prefix, CUDA graphs.

``generate`` on a batch of left-padded prompts spends most of a short answer's decode steps
launching kernels (32 layers x a dozen small kernels per token) and, with the default dynamic
cache, re-copying the whole KV cache at every step. :class:`GraphDecoder` keeps one
``StaticCache`` alive across batches, so that transformers' own auto-compilation of the decode
step (``torch.compile`` in ``reduce-overhead`` mode, i.e. CUDA graphs) replays the same graph for
every batch of the same shape: rows are padded up to the batch size and the cache length is
rounded up to a bucket; the caches of the last few shapes are kept, so batches of videos of
different lengths do not re-record graphs each time. Answers longer than ``graph_tokens``
continue on the eager path, so a task's large ``max_new_tokens`` does not size the static cache.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel, StaticCache

PrefixKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass
class LlmInputs:
    """A generation batch: whole left-padded sequences and, when shared, the prefix's KV (batch 1)."""

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    prefix: PrefixKV | None = None

    @property
    def rows(self) -> int:
        return self.embeds.shape[0]

    def dynamic_cache(self, beams: int = 1) -> DynamicCache | None:
        """A fresh cache holding the prefix for every row and beam (``generate`` extends it in place;
        it expands the inputs for beam search but not a cache passed in)."""
        if self.prefix is None:
            return None
        rows = self.rows * beams
        return DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.prefix])


def prefix_kv(model: PreTrainedModel, prefix_ids: torch.Tensor) -> PrefixKV:
    """Per-layer keys and values of ``prefix_ids`` (``[1, length]``)."""
    cache = model(input_ids=prefix_ids, use_cache=True).past_key_values
    return tuple((layer.keys, layer.values) for layer in cache.layers)


def generate_eager(model: PreTrainedModel, inputs: LlmInputs, **kwargs: Any) -> list[list[int]]:
    """``generate`` with a dynamic cache; new token ids per row."""
    cache = inputs.dynamic_cache(beams=int(kwargs.get("num_beams", 1)))
    output = model.generate(inputs_embeds=inputs.embeds, attention_mask=inputs.attention_mask,
                            past_key_values=cache, disable_compile=True, **kwargs)
    return output.tolist()


class GraphDecoder:
    """Static-cache decoding whose decode step transformers compiles once and replays as a CUDA graph."""

    def __init__(
        self, model: PreTrainedModel, batch_size: int, graph_tokens: int = 64, bucket: int = 32, kept_shapes: int = 3
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.graph_tokens = graph_tokens
        self.bucket = bucket
        self.kept_shapes = kept_shapes
        self._caches: OrderedDict[tuple[int, int], StaticCache] = OrderedDict()

    def generate(self, inputs: LlmInputs, eos_token_id: int, **kwargs: Any) -> list[list[int]]:
        """New token ids per row; rows still unfinished after ``graph_tokens`` continue eagerly."""
        max_new = int(kwargs.pop("max_new_tokens"))
        min_new = int(kwargs.pop("min_new_tokens", 0) or 0)
        first_new = min(max_new, self.graph_tokens)
        padded = self._pad_rows(inputs)
        cache = self._static_cache(padded, first_new)
        output = self.model.generate(inputs_embeds=padded.embeds, attention_mask=padded.attention_mask,
                                     past_key_values=cache, max_new_tokens=first_new,
                                     min_new_tokens=min(min_new, first_new), eos_token_id=eos_token_id, **kwargs)
        rows = output[: inputs.rows].tolist()
        unfinished = [i for i, row in enumerate(rows) if eos_token_id not in row and len(row) == first_new]
        if max_new > first_new and unfinished:
            rest = generate_eager(self.model, _extend(self.model, inputs, unfinished, output),
                                  max_new_tokens=max_new - first_new, min_new_tokens=max(0, min_new - first_new),
                                  eos_token_id=eos_token_id, **kwargs)
            for index, tail in zip(unfinished, rest, strict=True):
                rows[index] = rows[index] + tail
        return rows

    def _pad_rows(self, inputs: LlmInputs) -> LlmInputs:
        """Repeat the last row up to the batch size: one graph shape for every batch (extra rows discarded)."""
        missing = self.batch_size - inputs.rows
        if missing <= 0:
            return inputs
        embeds = torch.cat([inputs.embeds, inputs.embeds[-1:].expand(missing, -1, -1)])
        mask = torch.cat([inputs.attention_mask, inputs.attention_mask[-1:].expand(missing, -1)])
        return LlmInputs(embeds, mask, inputs.prefix)

    def _static_cache(self, inputs: LlmInputs, new_tokens: int) -> StaticCache:
        """This shape's cache (reset) or a new one, least recently used evicted; the prefix written in."""
        length = math.ceil((inputs.embeds.shape[1] + new_tokens) / self.bucket) * self.bucket
        shape = (inputs.rows, length)
        cache = self._caches.pop(shape, None)
        if cache is None:
            while len(self._caches) >= self.kept_shapes:
                self._caches.popitem(last=False)
            cache = StaticCache(config=self.model.config, max_cache_len=length)
        else:
            cache.reset()
        self._caches[shape] = cache
        for layer_index, (keys, values) in enumerate(inputs.prefix or ()):
            cache.update(keys.expand(inputs.rows, -1, -1, -1), values.expand(inputs.rows, -1, -1, -1), layer_index)
        return cache


def _extend(model: PreTrainedModel, inputs: LlmInputs, rows: list[int], generated: torch.Tensor) -> LlmInputs:
    """``inputs`` restricted to ``rows``, each followed by the tokens generated for it so far."""
    index = torch.tensor(rows, device=inputs.embeds.device)
    new_ids = generated.index_select(0, index.to(generated.device)).to(inputs.embeds.device)
    embeds = torch.cat([inputs.embeds.index_select(0, index), model.get_input_embeddings()(new_ids)], dim=1)
    mask = torch.cat([inputs.attention_mask.index_select(0, index), torch.ones_like(new_ids)], dim=1)
    return LlmInputs(embeds, mask, inputs.prefix)
