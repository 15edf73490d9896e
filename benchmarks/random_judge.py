"""A Llama-3-8B-shaped random judge whose greedy reply is a fixed, realistic-length verdict.

Judge throughput does not depend on weight values, but a random model never writes a verdict, so
it would always run to ``max_new_tokens`` and nothing could be parsed. Here every layer is at real
size and computes as usual, but the model is rigged (``llamavid_eval.judges.scripted``) so that its
greedy reply is a fixed chain of tokens. The reply is 12 tokens ("Here is my judgement of the
predicted answer: {'pred': 'yes', 'score': 4}"), about what a chat judge writes. The tokenizer is a
byte-level BPE trained here on the judge prompt's own words (whole words, as Llama-3's 128k-piece
tokenizer keeps them), with Llama-3's chat framing tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llamavid_eval.judges.prompt import REASK_TEMPLATE, SYSTEM_PROMPT, USER_TEMPLATE
from llamavid_eval.judges.scripted import script_reply

LLAMA3_8B = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "rope_theta": 500000.0,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
#: CPU checks of the benchmark scripts: the same shape of model, small enough for a laptop
TINY = {
    **LLAMA3_8B,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
REPLY = [
    "Here",
    " is",
    " my",
    " judgement",
    " of",
    " the",
    " predicted",
    " answer:",
    " {'pred':",
    " 'yes',",
    " 'score':",
    " 4}",
]
WORDS = (
    "what is the man doing who woman playing guitar slicing where dog running child throw how many people "
    "dancing cooking riding a horse bike car cat ball singing talking walking swimming eating food kitchen "
    "street park field water table two three four one yes no system user assistant"
).split()


def build_tokenizer(out_dir: Path) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the prompt's words + Llama-3 specials + the reply's pieces as whole tokens;
    digits are single tokens."""
    bpe = Tokenizer(models.BPE())
    # digits split from what precedes them, one token each, as Llama-3's pre-tokenizer does (the
    # constrained judge reads the score off single digit tokens)
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    corpus = [SYSTEM_PROMPT, USER_TEMPLATE, REASK_TEMPLATE, " ".join(WORDS)] * 50
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=3000, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    bpe.add_tokens([AddedToken(piece, normalized=False) for piece in REPLY])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>"
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out_dir)
    return tok


def build_judge(tok: PreTrainedTokenizerFast, device: str = "cuda", size: str = "8b") -> LlamaForCausalLM:
    """The 8B-shaped model (``size="tiny"``: :data:`TINY`) on ``device`` in bf16, rigged to reply
    :data:`REPLY` to any prompt."""
    config = LlamaConfig(
        **(TINY if size == "tiny" else LLAMA3_8B),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    prompt = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    chain = [tok(prompt, add_special_tokens=False)["input_ids"][-1], *tok.convert_tokens_to_ids(REPLY)]
    script_reply(model, chain)  # the following token's logit ~640 after the final norm, the random rest ~1
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model.eval()
