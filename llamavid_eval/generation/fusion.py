"""One fused GPU kernel per RMSNorm instead of ~7 (``torch.compile`` of each norm module).

transformers' ``LlamaRMSNorm`` runs as separate kernels (upcast, square, mean, rsqrt, two
multiplies, downcast): 65 norms x 7 launches in a 7B decode step, and seven fp32 passes over the
activations in a prefill. Compiling the norm modules alone - not the decoder layers, whose
``layer_idx`` would make ``torch.compile`` specialise once per layer - costs one compilation shared
by every instance (``dynamic=True``: every prompt length) and leaves the rest of the model as is.
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

#: Compilations one norm code object may hold. Each (dtype, eps, size-1 axes, contiguity) needs its
#: own: a decode step, a prefill, a prefix, for the video model and an in-process judge in one
#: process, ~10 - over PyTorch's default of 8, past which it silently runs the norms unfused.
RECOMPILE_LIMIT = 32


def fuse_rms_norms(model: torch.nn.Module) -> int:
    """Compile every ``LlamaRMSNorm`` of ``model`` in place; returns how many."""
    norms = [module for module in model.modules() if isinstance(module, LlamaRMSNorm)]
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for norm in norms:
        norm.compile(dynamic=True)
    return len(norms)
