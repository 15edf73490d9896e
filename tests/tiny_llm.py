"""Test helpers for the decoding code: a tiny Llama, left-padded prompts with a shared prefix, and the
attention module attributes that transformers' attention functions read."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llamavid_eval.generation.decoding import LlmInputs, prefix_kv


class AttentionHeads(torch.nn.Module):
    """What an attention function reads from its calling module: the query heads per key/value head."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups, self.training = groups, False


def tiny_llama(kv_heads: int, seed: int) -> LlamaForCausalLM:
    """A random 2-layer Llama with 8 query heads on ``kv_heads`` key/value heads (eos 1, pad 0)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
    )
    return LlamaForCausalLM(config).eval()


def shared_prefix_prompts(model: LlamaForCausalLM, shared: int = 5, seed: int = 3) -> LlmInputs:
    """Three left-padded prompts of different lengths that share their first ``shared`` ids, on the
    model's device (no prefix KV when ``shared`` is 0)."""
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.randint(2, 97, (shared,), generator=generator)
    own = [torch.randint(2, 97, (n,), generator=generator) for n in (4, 7, 2)]
    width = shared + max(len(o) for o in own)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for row, tokens in enumerate(own):
        ids[row, :shared], mask[row, :shared] = prefix, 1
        ids[row, width - len(tokens) :], mask[row, width - len(tokens) :] = tokens, 1
    ids, mask, prefix = ids.to(model.device), mask.to(model.device), prefix.to(model.device)
    with torch.inference_mode():
        kv = prefix_kv(model, prefix[None]) if shared else None
        return LlmInputs(model.get_input_embeddings()(ids), mask, kv)
