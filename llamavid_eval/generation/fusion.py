"""Fewer, fused GPU kernels for the language model's RMSNorms, RoPE and MLP gates (``torch.compile``
of small parts).

transformers' ``LlamaRMSNorm`` runs as separate kernels (upcast, square, mean, rsqrt, two
multiplies, downcast): 65 norms x 7 launches in a 7B decode step, and seven fp32 passes over the
activations in a prefill. Compiling the norm modules alone - not the decoder layers, whose
``layer_idx`` would make ``torch.compile`` specialise once per layer - costs one compilation shared
by every instance (``dynamic=True``: every prompt length) and leaves the rest of the model as is.
Measured on an H200: the 7B LLM stage 12-15% faster, fp32 token ids unchanged
(``benchmarks/RESULTS.md``). RoPE and the MLPs' SiLU gate are fused the same way, as compiled
functions that the attention and MLP modules call (:class:`RotaryFusedAttention`,
:class:`GateFusedMLP`), not by compiling the layers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaMLP,
    LlamaRMSNorm,
    eager_attention_forward,
)

log = logging.getLogger(__name__)

#: Compilations one norm code object may hold. Each (dtype, eps, size-1 axes, contiguity) needs its
#: own: a decode step, a prefill, a prefix, for the video model and an in-process judge in one
#: process, ~10 - over PyTorch's default of 8, past which it silently runs the norms unfused.
RECOMPILE_LIMIT = 32


def fuse_rms_norms(model: torch.nn.Module) -> int:
    """Compile every ``LlamaRMSNorm`` of ``model`` in place; returns how many (0 when compiling does
    not work here - no Triton, no C compiler for its launcher - and the model stays as it was)."""
    norms = [module for module in model.modules() if isinstance(module, LlamaRMSNorm)]
    if not norms:
        return 0
    _raise_recompile_limit()
    # A copy is compiled and run first, so that a failure leaves the model untouched; its compiled
    # code is the one every norm then reuses.
    probe = copy.deepcopy(norms[0])
    probe.compile(dynamic=True)
    try:
        with torch.inference_mode():
            probe(torch.ones(2, 3, probe.weight.shape[0], dtype=probe.weight.dtype, device=probe.weight.device))
    except Exception as err:  # the model works unfused, only slower: say so and go on
        log.warning("RMSNorms left unfused: torch.compile failed here (%s: %s)", type(err).__name__, err)
        return 0
    for norm in norms:
        norm.compile(dynamic=True)
    return len(norms)


def _raise_recompile_limit() -> None:
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)


#: ``torch.compile`` settings for functions whose inputs pass through :func:`_dynamic_rows`: their row
#: axis is the only symbolic size, the widths are constants. With every axis symbolic
#: (``dynamic=True``) the RoPE kernel indexed its inputs through divisions by runtime sizes and ran at
#: a sixth of the memory bandwidth on an H100 (417 us for a 235 MB call, ``profile_batch.py`` record
#: ``20261206T200226Z``).
ROWS_DYNAMIC: dict[str, Any] = {"dynamic": False}


def _dynamic_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``[..., width]`` -> ``[rows, width]`` (a view when contiguous), the row axis marked dynamic
    (one compiled graph for every batch and prompt length; 1 row gets its own)."""
    flat = tensor.reshape(-1, tensor.shape[-1])
    torch._dynamo.maybe_mark_dynamic(flat, 0)
    return flat


def _rotate_pair(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE (``apply_rotary_pos_emb``'s formula) on token-major projections ``[n, heads * head_dim]``
    with ``cos``/``sin`` ``[n, head_dim]``: the kernel reads and writes one layout (a kernel that also
    transposed ran at under a tenth of the bandwidth, record ``20261206T174034Z``)."""

    def rotate(states: torch.Tensor) -> torch.Tensor:
        states = states.view(states.shape[0], -1, head_dim)
        half = head_dim // 2
        turned = torch.cat((-states[..., half:], states[..., :half]), dim=-1)
        return (states * cos[:, None] + turned * sin[:, None]).flatten(1)

    return rotate(query), rotate(key)


_compiled_rotate_pair = torch.compile(_rotate_pair, **ROWS_DYNAMIC)


def rotary_heads(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projections ``[rows, tokens, heads * head_dim]`` -> ``[rows, heads, tokens, head_dim]`` views,
    RoPE applied to queries and keys by one compiled call; the values are only viewed."""
    rows, tokens = query.shape[:2]
    angles = (_dynamic_rows(part.expand(rows, tokens, -1)) for part in (cos, sin))
    rotated = _compiled_rotate_pair(_dynamic_rows(query), _dynamic_rows(key), *angles, head_dim)
    return tuple(states.view(rows, tokens, -1, head_dim).transpose(1, 2) for states in (*rotated, value))


class RotaryFusedAttention(LlamaAttention):
    """``LlamaAttention`` whose RoPE and head layout run as one compiled kernel per call.

    The library's attention applies RoPE as ~10 kernels (two multiplies, a negation, a ``cat`` and
    an add for queries and for keys, each reading and writing transposed views): 57 of the 393 ms of
    a 512-question prefill on an H100 (``profile_batch.py`` record ``20261206T043433Z``). Only ``forward`` differs:
    the parameters, their names and the attention implementation it dispatches to are the library's.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cos, sin = position_embeddings
        query, key, value = rotary_heads(
            self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states), cos, sin, self.head_dim
        )
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(output.reshape(*hidden_states.shape[:-1], -1).contiguous()), weights


def _silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``LlamaMLP``'s ``act_fn(gate_proj(x)) * up_proj(x)`` for ``hidden_act="silu"``."""
    return F.silu(gate) * up


_compiled_silu_gate = torch.compile(_silu_gate, **ROWS_DYNAMIC)


class GateFusedMLP(LlamaMLP):
    """``LlamaMLP`` whose SiLU and gate product run as one compiled kernel.

    Unfused they are two kernels over ``[tokens, intermediate]`` tensors (the SiLU's output written and
    read back): 16.4 of the 355 ms of a 512-question prefill on an H100 (record ``20261206T200226Z``).
    Only ``forward`` differs; fused only where ``hidden_act`` is ``silu`` (:func:`fuse_gated_mlps`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(_compiled_silu_gate(_dynamic_rows(gate), _dynamic_rows(up)).view(gate.shape))


def _swap_forward(layers: list[torch.nn.Module], fused: type, probe: Callable[[Any], Any], what: str) -> int:
    """Give ``layers`` the class ``fused`` (same parameters and buffers, only ``forward`` differs) once
    ``probe(layers[0])`` ran its compiled code; returns how many (0 when compiling does not work
    here - no Triton, no C compiler for its launcher - and the layers stay as they were)."""
    if not layers:
        return 0
    _raise_recompile_limit()
    try:
        with torch.inference_mode():
            probe(layers[0])
    except Exception as err:  # the model works unfused, only slower: say so and go on
        log.warning("%s left unfused: torch.compile failed here (%s: %s)", what, type(err).__name__, err)
        return 0
    for layer in layers:
        layer.__class__ = fused
    return len(layers)


def _probe_rotary(layer: LlamaAttention) -> None:
    weight = layer.q_proj.weight
    probe = torch.ones(2, 3, 2 * layer.head_dim, dtype=weight.dtype, device=weight.device)
    angles = torch.ones(2, 3, layer.head_dim, dtype=weight.dtype, device=weight.device)
    rotary_heads(probe, probe, probe, angles, angles, layer.head_dim)


def _probe_gate(layer: LlamaMLP) -> None:
    weight = layer.up_proj.weight
    probe = torch.ones(3, 2, dtype=weight.dtype, device=weight.device)
    _compiled_silu_gate(probe, probe)


def fuse_rotary(model: torch.nn.Module) -> int:
    """Turn every ``LlamaAttention`` of ``model`` into a :class:`RotaryFusedAttention` in place; returns
    how many (0 when compiling does not work here, and the model stays as it was)."""
    layers = [module for module in model.modules() if type(module) is LlamaAttention]
    return _swap_forward(layers, RotaryFusedAttention, _probe_rotary, "RoPE")


def fuse_gated_mlps(model: torch.nn.Module) -> int:
    """Turn every SiLU-gated ``LlamaMLP`` of ``model`` into a :class:`GateFusedMLP` in place; returns
    how many (0 when compiling does not work here, and the model stays as it was)."""
    layers = [m for m in model.modules() if type(m) is LlamaMLP and m.config.hidden_act == "silu"]
    return _swap_forward(layers, GateFusedMLP, _probe_gate, "MLP gates")
