"""One fused GPU kernel per RMSNorm instead of ~7 (``torch.compile`` of each norm module).

transformers' ``LlamaRMSNorm`` runs as separate kernels (upcast, square, mean, rsqrt, two
multiplies, downcast): 65 norms x 7 launches in a 7B decode step, and seven fp32 passes over the
activations in a prefill. Compiling the norm modules alone - not the decoder layers, whose
``layer_idx`` would make ``torch.compile`` specialise once per layer - costs one compilation shared
by every instance (``dynamic=True``: every prompt length) and leaves the rest of the model as is.
Measured on an H200: the 7B LLM stage 12-15% faster, fp32 token ids unchanged
(``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

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
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
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
