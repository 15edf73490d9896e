"""Fewer, fused GPU kernels for the language model's RMSNorms and RoPE (``torch.compile`` of small parts).

transformers' ``LlamaRMSNorm`` runs as separate kernels (upcast, square, mean, rsqrt, two
multiplies, downcast): 65 norms x 7 launches in a 7B decode step, and seven fp32 passes over the
activations in a prefill. Compiling the norm modules alone - not the decoder layers, whose
``layer_idx`` would make ``torch.compile`` specialise once per layer - costs one compilation shared
by every instance (``dynamic=True``: every prompt length) and leaves the rest of the model as is.
Measured on an H200: the 7B LLM stage 12-15% faster, fp32 token ids unchanged
(``benchmarks/RESULTS.md``). RoPE is fused the same way, as one compiled function that the
attention layers call (:class:`RotaryFusedAttention`), not by compiling the layers.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRMSNorm, eager_attention_forward

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


def _rotary_heads(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projections ``[rows, tokens, heads * head_dim]`` -> ``[rows, heads, tokens, head_dim]`` views,
    RoPE applied to queries and keys (``apply_rotary_pos_emb``'s formula).

    The rotation is written in the projections' own layout and only then viewed head-major: a kernel
    that also wrote the transposed layout ran at under a tenth of the memory bandwidth on an H100 (68 ms
    per 512-question prefill, record ``20261206T174034Z``)."""

    def rotate(states: torch.Tensor) -> torch.Tensor:
        states = states.view(*states.shape[:2], -1, head_dim)
        half = head_dim // 2
        turned = torch.cat((-states[..., half:], states[..., :half]), dim=-1)
        return states * cos[:, :, None] + turned * sin[:, :, None]

    def heads(states: torch.Tensor) -> torch.Tensor:
        return states.view(*states.shape[:2], -1, head_dim).transpose(1, 2)

    return rotate(query).transpose(1, 2), rotate(key).transpose(1, 2), heads(value)


_compiled_rotary_heads = torch.compile(_rotary_heads, dynamic=True)


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
        query, key, value = _compiled_rotary_heads(
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


def fuse_rotary(model: torch.nn.Module) -> int:
    """Turn every ``LlamaAttention`` of ``model`` into a :class:`RotaryFusedAttention` in place; returns
    how many (0 when compiling does not work here, and the model stays as it was)."""
    layers = [module for module in model.modules() if type(module) is LlamaAttention]
    if not layers:
        return 0
    _raise_recompile_limit()
    weight = layers[0].q_proj.weight
    probe = torch.ones(2, 3, 2 * layers[0].head_dim, dtype=weight.dtype, device=weight.device)
    angles = torch.ones(2, 3, layers[0].head_dim, dtype=weight.dtype, device=weight.device)
    try:
        with torch.inference_mode():
            _compiled_rotary_heads(probe, probe, probe, angles, angles, layers[0].head_dim)
    except Exception as err:  # the model works unfused, only slower: say so and go on
        log.warning("RoPE left unfused: torch.compile failed here (%s: %s)", type(err).__name__, err)
        return 0
    for layer in layers:
        layer.__class__ = RotaryFusedAttention  # same parameters and buffers; only forward differs
    return len(layers)
