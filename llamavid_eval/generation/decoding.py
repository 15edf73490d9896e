"""Batched greedy decoding of short replies: shared prompt prefix, static cache, CUDA graphs.

``generate`` spends most of a short answer's decode steps in Python: per step it rebuilds inputs,
runs logits processors and stopping criteria, and synchronises with the GPU to ask whether every
row finished, while 32 layers x a dozen small kernels are launched one by one. For greedy
decoding :class:`GraphDecoder` runs its own loop instead: one prefill over the new tokens (the
shared prefix's KV is copied into a right-sized ``StaticCache``), then decode steps in which
everything - embedding, the model, the eos ban before ``min_new_tokens``, the argmax, padding of
finished rows, the cache's write position and the attention mask - is one captured CUDA graph,
replayed with no Python per token and no host synchronisation until the end (or every
``check_every`` steps, to stop when all rows finished). Rows are padded up to the batch size (a
small batch up to a power of two) and the cache length is rounded up to a bucket, so every batch of
the same shape replays the same graph; the last few shapes' graphs are kept. Answers longer than ``graph_tokens`` continue on the
eager ``generate`` path, so a task's large ``max_new_tokens`` does not size the static cache.
Sampling and beam search go to ``generate`` as well. Rows may also stop at other tokens than eos
(the judge stops once its verdict dictionary closes). The video model's answers and the in-process
judge's verdicts both decode here; :func:`to_device` is how their host tensors reach the GPU.
On a GPU the prefill and the steps attend with one Triton kernel (``cache_attention.py``) that reads
the shared prefix once for all rows.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import record_function
from transformers import DynamicCache, PreTrainedModel, StaticCache

from llamavid_eval.generation.attention import GROUPED_ATTENTION, attention_implementation, grouped_attention_for

try:  # Triton ships with torch's Linux wheels; without it the grouped products serve everywhere
    from llamavid_eval.generation.cache_attention import CACHE_ATTENTION
except ImportError:
    CACHE_ATTENTION = None

PrefixKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]

#: ``generate`` options the static loop implements itself (greedy, optional min_new_tokens).
_GREEDY_OPTIONS = {"max_new_tokens", "min_new_tokens", "do_sample", "num_beams", "pad_token_id"}


@dataclass
class LlmInputs:
    """A generation batch: whole left-padded sequences and, when shared, the prefix's KV (batch 1)."""

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    prefix: PrefixKV | None = None

    @property
    def rows(self) -> int:
        return self.embeds.shape[0]

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else self.prefix[0][0].shape[2]

    def dynamic_cache(self, beams: int = 1) -> DynamicCache | None:
        """A fresh cache holding the prefix for every row and beam (``generate`` extends it in place;
        it expands the inputs for beam search but not a cache passed in)."""
        if self.prefix is None:
            return None
        rows = self.rows * beams
        return DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in self.prefix])


def prefix_kv(model: PreTrainedModel, prefix_ids: torch.Tensor) -> PrefixKV:
    """Per-layer keys and values of ``prefix_ids`` (``[1, length]``)."""
    cache = model(input_ids=prefix_ids, use_cache=True).cache
    return tuple((layer.keys, layer.values) for layer in cache.layers)


def generate_eager(model: PreTrainedModel, inputs: LlmInputs, **kwargs: Any) -> list[list[int]]:
    """``generate`` with a dynamic cache; new token ids per row."""
    cache = inputs.dynamic_cache(beams=int(kwargs.get("num_beams", 1)))
    output = model.generate(
        inputs_embeds=inputs.embeds, attention_mask=inputs.attention_mask, cache=cache, disable_compile=True, **kwargs
    )
    return output.tolist()


def is_greedy(kwargs: dict[str, Any]) -> bool:
    """Whether the static loop computes what ``generate`` would for these options."""
    return (
        set(kwargs) <= _GREEDY_OPTIONS and not kwargs.get("do_sample", False) and int(kwargs.get("num_beams", 1)) == 1
    )


class GraphDecoder:
    """Greedy static-cache decoding; on CUDA each decode step is one replayed CUDA graph."""

    def __init__(
        self,
        model: PreTrainedModel,
        batch_size: int,
        graph_tokens: int = 64,
        bucket: int = 32,
        kept_shapes: int = 3,
        check_every: int = 16,
        use_graphs: bool | None = None,
        attention: str | None = None,
    ) -> None:
        self.model = model
        self.attention = attention
        self.batch_size = batch_size
        self.graph_tokens = graph_tokens
        self.bucket = bucket
        self.kept_shapes = kept_shapes
        self.check_every = check_every
        self.use_graphs = use_graphs
        self._states: OrderedDict[tuple[int, int], _StaticLoop] = OrderedDict()

    def generate(
        self, inputs: LlmInputs, eos_token_id: int, stop_token_ids: Sequence[int] = (), **kwargs: Any
    ) -> list[list[int]]:
        """New token ids per row (ending at eos or a stop token, if reached); see :meth:`launch`."""
        return self.launch(inputs, eos_token_id, stop_token_ids, **kwargs).rows()

    def launch(
        self, inputs: LlmInputs, eos_token_id: int, stop_token_ids: Sequence[int] = (), **kwargs: Any
    ) -> PendingDecode:
        """Queue the decoding on the GPU and return without waiting for it (the caller can prepare its
        next batch meanwhile). A row ends at ``eos_token_id`` (banned before ``min_new_tokens``) or
        at any of ``stop_token_ids``. Non-greedy options, and attention kernels that take no 4D mask
        (flash-attention), run ``generate`` at once."""
        stops = _Stops(eos_token_id, stop_token_ids)
        if not is_greedy(kwargs) or self.model.config._attn_implementation not in ("sdpa", "eager"):
            done = generate_eager(self.model, inputs, eos_token_id=stops.for_generate, **kwargs)
            return PendingDecode(self.model, inputs, stops, {}, done=[stops.cut(row) for row in done])
        max_new = int(kwargs.pop("max_new_tokens"))
        min_new = int(kwargs.pop("min_new_tokens", 0) or 0)
        pad = int(kwargs.get("pad_token_id") or 0)
        first_new = min(max_new, self.graph_tokens)
        padded = self._pad_rows(inputs)
        loop = self._loop(padded, first_new)
        output = _ToHost(loop.run(padded, first_new, min_new, stops, pad, self.check_every)[: inputs.rows])
        rest = {**kwargs, "max_new_tokens": max_new - first_new, "min_new_tokens": max(0, min_new - first_new)}
        return PendingDecode(self.model, inputs, stops, rest, output=output, first_new=first_new)

    def _pad_rows(self, inputs: LlmInputs) -> LlmInputs:
        """Repeat the last row up to the batch size, or for a small batch (a judge's re-asks, a last
        batch) up to a power of two: few graph shapes for all batches (extra rows discarded)."""
        missing = min(self.batch_size, 2 ** math.ceil(math.log2(inputs.rows))) - inputs.rows
        if missing <= 0:
            return inputs
        embeds = torch.cat([inputs.embeds, inputs.embeds[-1:].expand(missing, -1, -1)])
        mask = torch.cat([inputs.attention_mask, inputs.attention_mask[-1:].expand(missing, -1)])
        return LlmInputs(embeds, mask, inputs.prefix)

    def _loop(self, inputs: LlmInputs, new_tokens: int) -> _StaticLoop:
        """This shape's loop (cache, buffers, graph) or a new one, least recently used evicted."""
        length = math.ceil((inputs.embeds.shape[1] + new_tokens) / self.bucket) * self.bucket
        shape = (inputs.rows, length)
        loop = self._states.pop(shape, None)
        if loop is None:
            while len(self._states) >= self.kept_shapes:
                self._states.popitem(last=False)
            device = inputs.embeds.device
            use_graphs = self.use_graphs if self.use_graphs is not None else device.type == "cuda"
            attention = self.attention or _default_attention(device)
            loop = _StaticLoop(self.model, inputs.rows, length, self.graph_tokens, inputs.embeds, use_graphs, attention)
        self._states[shape] = loop
        return loop


def _default_attention(device: torch.device) -> str:
    """The static loop's attention: the Triton cache kernel on CUDA (the shared prefix read once, one
    kernel per layer), the grouped products elsewhere."""
    if CACHE_ATTENTION is not None and device.type == "cuda":
        return CACHE_ATTENTION
    return GROUPED_ATTENTION


@dataclass(frozen=True)
class _Stops:
    """Where a row ends: eos (which ``min_new_tokens`` bans) or any extra stop token."""

    eos: int
    extra: Sequence[int] = ()

    @property
    def ids(self) -> list[int]:
        return [self.eos, *self.extra]

    @functools.cached_property
    def ends(self) -> frozenset[int]:
        return frozenset(self.ids)

    @property
    def for_generate(self) -> int | list[int]:
        """``generate``'s ``eos_token_id`` (a plain id when there is no extra stop, as callers pass it)."""
        return self.ids if self.extra else self.eos

    def cut(self, row: list[int]) -> list[int]:
        """``row`` up to and including its first stop (what batch-1 ``generate`` returns)."""
        for index, token in enumerate(row):
            if token in self.ends:
                return row[: index + 1]
        return row


class _ToHost:
    """Decoded ids on their way to the host: a copy queued right behind the decode steps, and an
    event to wait for. Waiting on that event, not on the stream, lets the host go on while the GPU
    runs what was queued after the decode (the next batch's tower and Q-Former): ``tolist()`` on
    the device tensor would wait for all of it."""

    def __init__(self, ids: torch.Tensor) -> None:
        if ids.device.type == "cuda":
            self.host = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
            self.host.copy_(ids, non_blocking=True)
            self.ready: torch.cuda.Event | None = torch.cuda.Event()
            self.ready.record()
        else:
            self.host, self.ready = ids.clone(), None

    def tolist(self) -> list[list[int]]:
        if self.ready is not None:
            self.ready.synchronize()
        return self.host.tolist()


class PendingDecode:
    """Decoded ids still on the GPU; :meth:`rows` waits for them and finishes long answers eagerly."""

    def __init__(
        self,
        model: PreTrainedModel,
        inputs: LlmInputs,
        stops: _Stops,
        rest: dict[str, Any],
        output: _ToHost | None = None,
        first_new: int = 0,
        done: list[list[int]] | None = None,
    ) -> None:
        self.model, self.inputs, self.stops, self.rest = model, inputs, stops, rest
        self.output, self.first_new, self.done = output, first_new, done

    @torch.inference_mode()
    def rows(self) -> list[list[int]]:
        if self.done is not None:
            return self.done
        stops = self.stops
        rows = [stops.cut(row) for row in self.output.tolist()]
        unfinished = [i for i, row in enumerate(rows) if len(row) == self.first_new and row[-1] not in stops.ends]
        if self.rest["max_new_tokens"] > 0 and unfinished:
            generated = self.output.host[unfinished]
            tails = generate_eager(
                self.model,
                _extend(self.model, self.inputs, unfinished, generated),
                eos_token_id=stops.for_generate,
                **self.rest,
            )
            for index, tail in zip(unfinished, tails, strict=True):
                rows[index] = rows[index] + stops.cut(tail)
        self.done = rows
        return rows


class _StaticLoop:
    """A static cache with the decode step's input/output buffers and, on CUDA, the step's graph."""

    def __init__(
        self,
        model: PreTrainedModel,
        rows: int,
        length: int,
        max_tokens: int,
        like: torch.Tensor,
        use_graphs: bool,
        attention: str,
    ) -> None:
        config = model.config
        device = like.device
        self.model = model
        self.attention = attention
        # slots at the cache's start that hold the shared prefix in every row (the cache kernel reads row 0's)
        self.shared = torch.zeros((), dtype=torch.int32, device=device)
        self.dtype = like.dtype
        self.length = length
        self.cache = StaticCache(config=config, max_cache_len=length)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache.early_initialization(rows, config.num_key_value_heads, head_dim, like.dtype, device)
        self.mask = torch.zeros(rows, 1, 1, length, dtype=torch.bool, device=device)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.out = torch.zeros(rows, max_tokens, dtype=torch.long, device=device)
        self.step_index = torch.zeros((), dtype=torch.long, device=device)
        self.min_new = torch.zeros((), dtype=torch.long, device=device)
        self.eos = torch.zeros(1, dtype=torch.long, device=device)
        self.is_stop = torch.zeros(model.get_output_embeddings().weight.shape[0], dtype=torch.bool, device=device)
        self.pad = torch.zeros((), dtype=torch.long, device=device)
        self.graph = self._capture() if use_graphs else None
        self._prefix_in_cache: PrefixKV | None = None
        self._stops: _Stops | None = None

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Record one decode step (after warm-up steps on a side stream, as CUDA graph capture needs);
        the junk the warm-up writes is cleared by the next :meth:`run`."""
        self.mask[..., 0] = True
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.step()
        torch.cuda.current_stream().wait_stream(stream)
        self.cache.reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step()
        return graph

    def step(self) -> None:
        """One greedy decode step, on device tensors only (this is what the graph holds)."""
        write_at = self.cache.layers[0].cumulative_length.view(1)
        self.mask.index_fill_(3, write_at, True)
        embeds = self.model.get_input_embeddings()(self.tokens[:, None])
        # One query per row against the whole cache, K/V read once (attention.py and
        # cache_attention.py say why not SDPA or eager).
        with attention_implementation(self.model.config, self.attention):
            logits = self.model(
                inputs_embeds=embeds,
                attention_mask=self._for_attention(self.mask),
                position_ids=self.positions[:, None],
                cache=self.cache,
                use_cache=True,
                logits_to_keep=1,
                **self._attention_options(),
            ).logits[:, -1]
        chosen = self.choose(logits)
        chosen = torch.where(self.finished, self.pad, chosen)
        self.out.index_copy_(1, self.step_index.view(1), chosen[:, None])
        self.finished |= self.is_stop[chosen]
        self.tokens.copy_(chosen)
        self.positions.add_(1)
        self.step_index.add_(1)

    def _attention_options(self) -> dict[str, torch.Tensor]:
        """What the cache kernel takes beyond the interface's arguments: the shared prefix's length."""
        return {"shared_prefix": self.shared} if self.attention == CACHE_ATTENTION else {}

    def _prefill_attention(self) -> contextlib.AbstractContextManager[None]:
        """The cache kernel where the steps use it, else grouped products for a grouped-query model
        (K/V read once, not copied per query head) and the model's own attention otherwise."""
        if self.attention == CACHE_ATTENTION:
            return attention_implementation(self.model.config, CACHE_ATTENTION)
        return grouped_attention_for(self.model.config)

    def _for_attention(self, mask: torch.Tensor) -> torch.Tensor:
        """SDPA and the cache kernel take the boolean mask; eager and grouped attention add the mask to
        their scores, so they get 0 / -inf."""
        if self.model.config._attn_implementation in ("sdpa", CACHE_ATTENTION):
            return mask
        return torch.zeros(mask.shape, dtype=self.dtype, device=mask.device).masked_fill_(
            ~mask, torch.finfo(self.dtype).min
        )

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy token; eos banned while fewer than ``min_new`` tokens exist (``generate``'s
        MinNewTokensLengthLogitsProcessor), written with tensors so that the graph can hold it."""
        logits = logits.float()
        banned = torch.where(self.step_index < self.min_new, -math.inf, 0.0)
        logits.index_add_(1, self.eos, banned.expand(logits.shape[0], 1))
        return logits.argmax(dim=-1)

    @torch.inference_mode()
    def run(
        self, inputs: LlmInputs, new_tokens: int, min_new: int, stops: _Stops, pad: int, check_every: int
    ) -> torch.Tensor:
        """``[rows, <= new_tokens]`` greedy ids, a view of the output buffer that the next run
        overwrites (copy it first): prefill, then up to ``new_tokens - 1`` decode steps; the host
        waits only to check for finished rows."""
        self.min_new.fill_(min_new)
        self.eos.fill_(stops.eos)
        if stops != self._stops:
            # a host-side index copied without blocking: a blocking copy would wait for the whole stream
            self.is_stop.zero_()
            self.is_stop[to_device(torch.tensor(stops.ids), self.is_stop.device)] = True
            self._stops = stops
        self.pad.fill_(pad)
        self.step_index.zero_()
        self.finished.zero_()
        with record_function("generation.prefill"):
            self._prefill(inputs)
        done = 1
        with record_function("generation.decode_steps"):
            while done < new_tokens:
                if done % check_every == 0 and bool(self.finished.all()):
                    break
                self.graph.replay() if self.graph is not None else self.step()
                done += 1
            return self.out[:, :done]

    def _prefill(self, inputs: LlmInputs) -> None:
        """Run the non-prefix part of the prompts; the first new token goes to the step buffers."""
        start, total = inputs.prefix_length, inputs.embeds.shape[1]
        # The cache is not cleared (the mask hides every slot not written for this batch), and the
        # shared prefix stays in place from the previous batch when it is the same one.
        reuse = inputs.prefix is not None and inputs.prefix is self._prefix_in_cache
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(start if reuse else 0)
        self.shared.fill_(start)
        if not reuse:
            rows = inputs.rows
            for layer, (keys, values) in enumerate(inputs.prefix or ()):
                self.cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer)
            self._prefix_in_cache = inputs.prefix  # None: this batch's own tokens now fill those slots
        valid = inputs.attention_mask.bool()
        self.mask.zero_()
        self.mask[:, 0, 0, :total] = valid
        queries = torch.arange(start, total, device=valid.device)
        keys = torch.arange(self.length, device=valid.device)
        # causal over the cache, padding keys hidden; a query always sees itself, so that a padding
        # row with nothing to attend to gives finite values instead of NaN
        mask = (self.mask & (keys <= queries[:, None])) | (keys == queries[:, None])
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        with self._prefill_attention():
            logits = self.model(
                inputs_embeds=inputs.embeds[:, start:],
                attention_mask=self._for_attention(mask),
                position_ids=positions[:, start:],
                cache=self.cache,
                use_cache=True,
                logits_to_keep=1,
                **self._attention_options(),
            ).logits[:, -1]
        first = torch.where(self.finished, self.pad, self.choose(logits))
        self.out[:, 0] = first
        self.finished.copy_(self.is_stop[first])
        self.tokens.copy_(first)
        self.positions.copy_(positions[:, -1] + 1)
        self.step_index.fill_(1)


def _extend(model: PreTrainedModel, inputs: LlmInputs, rows: list[int], generated: torch.Tensor) -> LlmInputs:
    """``inputs`` restricted to ``rows``, each followed by ``generated`` (its tokens so far, same order)."""
    index = torch.tensor(rows, device=inputs.embeds.device)
    new_ids = generated.to(inputs.embeds.device)
    embeds = torch.cat([inputs.embeds.index_select(0, index), model.get_input_embeddings()(new_ids)], dim=1)
    mask = torch.cat([inputs.attention_mask.index_select(0, index), torch.ones_like(new_ids)], dim=1)
    return LlmInputs(embeds, mask, inputs.prefix)


# --- Host-to-GPU copies that never make the host wait. tensor.to('cuda', non_blocking=True) from pageable
# memory is not asynchronous: CUDA stages it through a pinned buffer and the host waits for everything queued
# before it on the stream (a 1 KB index copy cost the host 14.6 ms on an H200, benchmarks/timeline.py).
# Pinned first (PyTorch caches pinned blocks), the copy is queued and the host goes on.
def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; a host tensor bound for a GPU is pinned and copied without blocking."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
