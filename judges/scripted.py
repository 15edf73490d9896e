"""A transformers Llama rigged so that its greedy reply is a fixed token chain, whatever the prompt.

Tests need exact judge replies and benchmarks need real-size compute with a realistic reply length;
a random model gives neither, and nothing may be downloaded or trained. Every layer still computes
as usual, but its attention and MLP output projections are zero, so the last hidden state of a
position is its own token's embedding. Each chain token gets a one-hot embedding in a slot of its
own, and the LM head maps that slot to the chain's next token with a logit far above the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def script_reply(model: LlamaForCausalLM, chain: Sequence[int], logit: float = 10.0) -> None:
    """Rig ``model`` in place: greedy decoding continues ``chain[i]`` with ``chain[i + 1]``.

    A token that occurs twice in ``chain`` continues as at its last occurrence. The hidden size must
    exceed ``len(chain)`` (one slot per token).
    """
    if len(chain) > model.config.hidden_size:
        raise ValueError(f"a chain of {len(chain)} tokens needs a hidden size of at least that much")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        for slot, token in enumerate(chain):
            embed[token] = 0
            embed[token, slot] = 1
        for slot, following in enumerate(chain[1:]):
            head[following, slot] = logit


def word_level_llama(
    tokens: Sequence[str], special: dict[str, Any], **config: Any
) -> tuple[PreTrainedTokenizerFast, LlamaForCausalLM]:
    """A random 1-layer Llama as wide as its vocabulary (a slot per token for :func:`script_reply`)
    and a whitespace word-level tokenizer whose ids are the positions in ``tokens``.

    ``special``: the tokenizer's special tokens (``unk_token``, ``bos_token`` and ``eos_token`` at
    least; their ids go into the config too); ``config``: further ``LlamaConfig`` fields.
    """
    vocab = {token: index for index, token in enumerate(tokens)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=special["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **special)
    llama = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=len(vocab),
        num_hidden_layers=1,
        max_position_embeddings=4096,
        bos_token_id=vocab[special["bos_token"]],
        eos_token_id=vocab[special["eos_token"]],
        tie_word_embeddings=False,
        **config,
    )
    return tokenizer, LlamaForCausalLM(llama)
