"""Attention of a few new queries per row against a static cache, as one Triton kernel.

Why not the library kernels: at the video model's batch of 512 rows on an H200 (profile record
20261206T224606Z), :func:`~llamavid_eval.generation.attention.grouped_attention`'s batched products
took ~8.5 ms of each 19.7 ms decode step and SDPA's masked kernel 22.8 ms of the prefill;
flash-attention takes no arbitrary mask (the static cache's padding slots), and none of them reads
the shared prompt prefix once: every row holds its own copy. This kernel is flash attention's
online softmax over blocks of cache slots, for one (row, key/value head) per program with that
head's query heads stacked (so K/V are read once, never copied per query head), fp32 accumulators,
the mask read as given, and the first ``shared_prefix`` slots read from row 0 (a device scalar, so
a CUDA graph replays with any prefix). Few stacked queries (a decode step's one) are summed on the
CUDA cores, more go through ``tl.dot`` on the tensor cores (:data:`FEW_QUERIES_MAX`): a decode layer
at 512 rows takes 0.169 ms on an H100, against 0.307 for the grouped products (record
20261207T165800Z).

It runs on CUDA, and on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``, the tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

#: ``config._attn_implementation`` value that selects :func:`cache_attention`.
CACHE_ATTENTION = "llamavid_cache"


@dataclass(frozen=True)
class LaunchConfig:
    """Cache slots per block of the online softmax, warps per program, and software-pipelining stages."""

    block_slots: int
    warps: int
    stages: int


#: Up to this many stacked (query head, query) pairs per program the scores are broadcast products
#: summed on the CUDA cores, in registers, instead of ``tl.dot`` on 16 rows that are mostly padding:
#: faster for Vicuna's one query per decode step (0.169 against 0.181 ms a layer on an H100), slower
#: for Llama-3's four grouped heads (0.077 against 0.058; log 20261207T154339Z).
FEW_QUERIES_MAX = 1
#: Launch settings of the two paths: the fastest of ``benchmarks/cache_attention.py``'s sweep for
#: Vicuna on an H100 (log 20261207T154339Z): a decode layer 0.169 ms (the tensor-core path's best
#: 0.181), a prefill layer 0.417 ms (SDPA 0.549). Small programs keep more of them resident per SM,
#: and at ~20 KB of cache per program latency, not bandwidth, is what they wait on.
FEW_QUERIES = LaunchConfig(block_slots=32, warps=1, stages=1)
MANY_QUERIES = LaunchConfig(block_slots=16, warps=2, stages=2)


def runs_here(device: torch.device) -> bool:
    """Whether the kernel can run on ``device``: compiled on CUDA, interpreted on the CPU."""
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


@triton.jit
def _cache_attention_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, shared_ptr,
    sq_row, sq_head, sq_query,
    sk_row, sk_head, sk_slot,
    sv_row, sv_head, sv_slot,
    sm_row, sm_query, sm_slot,
    so_row, so_query, so_head,
    queries, slots, dim, scaling,
    GROUPS: tl.constexpr, HAS_MASK: tl.constexpr, BOOL_MASK: tl.constexpr, UPCAST: tl.constexpr,
    PRECISION: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # offsets past 2**31 elements in a large cache
    kv_head = tl.program_id(1)
    stacked = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)  # (group, query) pairs of this kv head
    group, query = stacked // queries, stacked % queries
    real = stacked < GROUPS * queries
    dims = tl.arange(0, BLOCK_D)
    in_dim = dims < dim
    head = kv_head * GROUPS + group
    q = tl.load(
        q_ptr + row * sq_row + head[:, None] * sq_head + query[:, None] * sq_query + dims[None, :],
        mask=real[:, None] & in_dim[None, :],
        other=0.0,
    )
    if UPCAST or not DOT:
        q = q.to(tl.float32)
    shared = tl.load(shared_ptr)
    best = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: a masked block gives exp(-inf) = 0, not NaN
    total = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for first in range(0, slots, BLOCK_N):
        slot = first + tl.arange(0, BLOCK_N)
        in_cache = slot < slots
        source = tl.where(slot < shared, 0, row)  # the shared prefix is the same in every row: read row 0's
        tile = in_cache[:, None] & in_dim[None, :]
        k = tl.load(k_ptr + source[:, None] * sk_row + kv_head * sk_head + slot[:, None] * sk_slot + dims[None, :],
                    mask=tile, other=0.0)  # fmt: skip
        v = tl.load(v_ptr + source[:, None] * sv_row + kv_head * sv_head + slot[:, None] * sv_slot + dims[None, :],
                    mask=tile, other=0.0)  # fmt: skip
        if UPCAST or not DOT:
            k, v = k.to(tl.float32), v.to(tl.float32)
        if DOT:
            scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scaling
        else:
            scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2) * scaling
        visible = real[:, None] & in_cache[None, :]
        if HAS_MASK:
            mask_at = mask_ptr + row * sm_row + query[:, None] * sm_query + slot[None, :] * sm_slot
            given = tl.load(mask_at, mask=visible, other=0)
            if BOOL_MASK:
                visible = visible & (given != 0)
            else:
                scores = scores + given.to(tl.float32)
        scores = tl.where(visible, scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        weights = tl.exp(scores - new_best[:, None])
        rescale = tl.exp(best - new_best)
        total = total * rescale + tl.sum(weights, axis=1)
        if DOT:
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v, input_precision=PRECISION)
        else:
            acc = acc * rescale[:, None] + tl.sum(weights[:, :, None] * v[None, :, :], axis=1)
        best = new_best
    out = acc / tl.where(total == 0.0, 1.0, total)[:, None]
    tl.store(
        out_ptr + row * so_row + query[:, None] * so_query + head[:, None] * so_head + dims[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=real[:, None] & in_dim[None, :],
    )


def cache_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    shared_prefix: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention with transformers' ``AttentionInterface`` signature: ``query`` ``[rows, heads, q,
    dim]``, ``key``/``value`` ``[rows, kv_heads, slots, dim]``, ``attention_mask`` boolean (True:
    seen) or additive, ``[rows or 1, 1, q or 1, >= slots]``; ``shared_prefix`` an int32 device scalar,
    the number of leading slots that hold the same keys/values in every row. Output ``[rows, q,
    heads, dim]``."""
    rows, heads, queries, dim = query.shape
    kv_heads, slots = key.shape[1], key.shape[2]
    if not runs_here(query.device):
        raise RuntimeError(
            f"{CACHE_ATTENTION} attention runs on CUDA, or on the CPU with TRITON_INTERPRET=1 set before "
            f"triton is imported; got a {query.device.type} tensor. Use attention 'sdpa' or "
            "'llamavid_grouped' there."
        )
    if any(t.stride(-1) != 1 for t in (query, key, value)):
        raise ValueError(
            f"{CACHE_ATTENTION} attention needs the head dimension contiguous (stride 1); call .contiguous()"
        )
    if shared_prefix is None:
        shared_prefix = torch.zeros((), dtype=torch.int32, device=query.device)
    output = torch.empty(rows, queries, heads, dim, dtype=query.dtype, device=query.device)
    mask, mask_strides, is_bool = _mask_arguments(attention_mask, slots, query)
    groups = heads // kv_heads
    stacked = groups * queries
    dot = stacked > FEW_QUERIES_MAX
    launch = MANY_QUERIES if dot else FEW_QUERIES
    block_m = min(64, max(16, triton.next_power_of_2(stacked))) if dot else triton.next_power_of_2(stacked)
    interpreted = query.device.type == "cpu"
    grid = (rows, kv_heads, triton.cdiv(stacked, block_m))
    _cache_attention_kernel[grid](
        query, key, value, mask, output, shared_prefix,
        query.stride(0), query.stride(1), query.stride(2),
        key.stride(0), key.stride(1), key.stride(2),
        value.stride(0), value.stride(1), value.stride(2),
        *mask_strides,
        output.stride(0), output.stride(1), output.stride(2),
        queries, slots, dim, scaling,
        GROUPS=groups, HAS_MASK=attention_mask is not None, BOOL_MASK=is_bool,
        # Triton 3.8's interpreter computes bf16 dot products wrongly: it gets fp32 operands
        UPCAST=interpreted, PRECISION="ieee" if query.dtype == torch.float32 else "tf32", DOT=dot,
        BLOCK_M=block_m, BLOCK_N=launch.block_slots, BLOCK_D=max(16, triton.next_power_of_2(dim)),
        num_warps=launch.warps, num_stages=launch.stages,
    )  # fmt: skip
    return output, None


def _mask_arguments(
    mask: torch.Tensor | None, slots: int, like: torch.Tensor
) -> tuple[torch.Tensor, tuple[int, int, int], bool]:
    """The mask as the kernel reads it (a boolean one as bytes), its row/query/slot strides (0 where
    it broadcasts), and whether it is boolean."""
    if mask is None:
        return like, (0, 0, 0), False
    mask = mask[..., :slots]
    is_bool = mask.dtype == torch.bool
    if is_bool:
        mask = mask.view(torch.uint8)
    strides = tuple(0 if mask.shape[axis] == 1 else mask.stride(axis) for axis in (0, 2, 3))
    return mask, strides, is_bool


AttentionInterface.register(CACHE_ATTENTION, cache_attention)
# Given a 2D padding mask, transformers builds eager's additive 4D mask, which the kernel adds to its scores.
AttentionMaskInterface.register(CACHE_ATTENTION, eager_mask)
