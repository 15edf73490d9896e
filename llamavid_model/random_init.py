"""LLaMA-VID at its real sizes with random weights, for speed and memory measurements.

Compute does not depend on weight values, so benchmarks build the 7B/13B architecture directly on
the GPU instead of loading 14-26 GB of released weights.
"""

from __future__ import annotations

import torch

from llamavid_eval.model.configuration_llamavid import LlamaVidConfig
from llamavid_eval.model.modeling_llamavid import LlamaVidForCausalLM

VICUNA = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32},
    "13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40},
}
EVA_VIT_G = {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39, "num_attention_heads": 16}
BERT_BASE_QFORMER = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "vocab_size": 30523,
    "encoder_hidden_size": 1408,
}


def real_size_config(size: str = "7b", image_size: int = 224, attn_implementation: str = "sdpa") -> LlamaVidConfig:
    """The released short-video recipe at real size (Vicuna + EVA-ViT-G + BERT-base Q-Former)."""
    if size not in VICUNA:
        raise ValueError(f"size must be one of {sorted(VICUNA)}, got {size!r}")
    config = LlamaVidConfig(
        vocab_size=32000,
        max_position_embeddings=4096,
        pad_token_id=0,
        **VICUNA[size],
        vision_config={**EVA_VIT_G, "image_size": image_size},
        qformer_config=dict(BERT_BASE_QFORMER),
    )
    config._attn_implementation = attn_implementation
    return config


def build_random(
    size: str = "7b", device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16, **config_kwargs
) -> LlamaVidForCausalLM:
    """Random-weight model built directly on ``device`` in ``dtype`` (seconds, no host copy)."""
    config = real_size_config(size, **config_kwargs)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaVidForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()
