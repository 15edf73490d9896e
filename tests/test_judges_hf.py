"""The ``hf`` backend with tiny Llamas built here: garbage replies become counted failures; batching,
left padding, decoding and parsing work end to end; a checkpoint's sampling defaults are ignored."""

from __future__ import annotations

import gc
import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llamavid_eval.judges import JudgeRequest, summarize  # noqa: E402
from llamavid_eval.judges.backends.hf import HFJudge  # noqa: E402
from llamavid_eval.judges.scripted import script_reply, word_level_llama  # noqa: E402

VERDICT = ["{'pred':", "'yes',", "'score':", "4}"]
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>"]
WORDS = ["ASSISTANT:", "USER:", "SYSTEM:", "Question:", "Answer:", "the", "a", "dog", "cat", "yes", "no", "score"]
REQS = [
    JudgeRequest("What animal?", "dog", "a dog"),
    JudgeRequest("What colour is the long red car?", "red", "blue"),
    JudgeRequest("Who?", "man", "a man"),
]


def build(path, *, forced: bool, chat_template: str | None = None, after_verdict: tuple[str, ...] = ("</s>",)) -> str:
    tokens = SPECIAL + WORDS + VERDICT
    torch.manual_seed(0)
    fast, model = word_level_llama(
        tokens,
        {"unk_token": "<unk>", "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"},
        intermediate_size=16,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokens.index("<pad>"),
    )
    vocab = fast.get_vocab()
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(path)
    if forced:  # ASSISTANT: -> {'pred': -> ... -> </s>, whatever the prompt
        script_reply(model, [vocab[token] for token in ("ASSISTANT:", *VERDICT, *after_verdict)])
    # the checkpoint asks for sampling, as Llama-3-Instruct's does; the judge must ignore it
    model.generation_config = transformers.GenerationConfig(
        do_sample=True, temperature=0.6, top_p=0.9, eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"]
    )
    model.save_pretrained(path)
    return str(path)


def test_random_llama_garbage_becomes_counted_failures(tmp_path):
    path = build(tmp_path / "random", forced=False)
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8, parse_retries=1, decoding="free")
    out = judge.judge_many(REQS)
    assert [j.failed for j in out] == [True, True, True]
    assert all(j.verdict is None and j.score is None for j in out)
    assert [j.metadata["parse_failures"] for j in out] == [2, 2, 2]
    assert all(j.error.startswith("unparseable reply after 2 attempt(s)") for j in out)
    s = summarize(out)
    assert (s["n"], s["failures"], s["accuracy"], s["judge"]) == (3, 3, None, f"hf:{path}")
    again = HFJudge(path, batch_size=3, device="cpu", max_new_tokens=8, parse_retries=1, decoding="free").judge_many(
        REQS
    )
    assert [j.raw for j in again] == [j.raw for j in out]  # greedy despite the checkpoint's sampling defaults


@pytest.mark.parametrize(
    "template",
    [
        None,
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }} "
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}",
    ],
)
def test_scripted_llama_verdicts_parse_end_to_end(tmp_path, template):
    path = build(tmp_path / "forced", forced=True, chat_template=template)
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8, decoding="free")
    out = judge.judge_many(REQS)  # prompts of different lengths: left padding must keep "ASSISTANT:" last
    assert [(j.verdict, j.score, j.failed) for j in out] == [(True, 4, False)] * 3
    assert out[0].raw == "{'pred': 'yes', 'score': 4}"
    assert out[0].backend == "hf" and out[0].metadata["attempts"] == 1


def test_missing_model_is_a_failure_not_a_crash(tmp_path):
    out = HFJudge(str(tmp_path / "nope"), device="cpu").judge_many(REQS[:2])
    assert [j.failed for j in out] == [True, True] and "could not load" in out[0].error


def test_reply_stops_once_the_verdict_is_complete(tmp_path):
    """A judge that would go on talking after the dictionary is cut at its closing brace."""
    path = build(tmp_path / "chatty", forced=True, after_verdict=("the", "dog", "the", "cat", "</s>"))
    out = HFJudge(path, batch_size=3, device="cpu", max_new_tokens=8, decoding="free").judge_many(REQS)
    assert [j.raw for j in out] == ["{'pred': 'yes', 'score': 4}"] * 3


def test_shared_prefix_and_length_sorting_give_plain_generate_replies(tmp_path):
    """Replies equal one-prompt-at-a-time ``generate`` (cut after the first token holding ``}``)."""
    from llamavid_eval.judges.prompt import build_messages

    path = build(tmp_path / "random", forced=False)
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8, parse_retries=0, decoding="free")
    out = judge.judge_many(REQS)
    tok, lm = judge._load()
    expected = []
    for req in REQS:
        ids = torch.tensor([judge._ids(tok, build_messages(req))])
        new = lm.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        closing = [i for i, t in enumerate(new) if "}" in tok.decode([t])]
        expected.append(tok.decode(new[: closing[0] + 1] if closing else new, skip_special_tokens=True))
    assert [j.raw for j in out] == expected
    assert judge._prefix is not None and len(judge._prefix[0]) > 5  # the instruction was shared


def test_out_of_memory_fails_the_chunk_and_names_the_batch_size(tmp_path, monkeypatch):
    """A batch too large for the GPU fails its items (counted, not cached) with the option to lower."""
    path = build(tmp_path / "forced", forced=True)
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8, parse_retries=0, decoding="free")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(judge, "_generate", out_of_memory)
    out = judge.judge_many(REQS)
    assert all(j.failed for j in out)
    assert all("lower LLAMAVID_JUDGE_BATCH_SIZE, now 2" in j.error for j in out)


def test_constrained_decoding_refuses_a_tokenizer_that_cannot_spell_the_frame(tmp_path):
    """The word-level tokenizer knows no ``{"pred":``: every item fails, counted, naming the way out."""
    path = build(tmp_path / "forced", forced=True)
    out = HFJudge(path, batch_size=2, device="cpu").judge_many(REQS)
    assert all(j.failed and j.verdict is None for j in out)
    assert "LLAMAVID_JUDGE_DECODING=free" in out[0].error and out[0].metadata["attempts"] == 1


def byte_level_llama(seed: int):
    """A random 2-layer Llama over single bytes: ``yes`` is three tokens, ``no`` two."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE({ch: i for i, ch in enumerate(["<pad>", "</s>", *alphabet])}, []))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return tok, LlamaForCausalLM(config).eval()


def reference_choice(lm, frame):
    """p(yes) renormalised and the score distribution after the likelier verdict, from one plain forward
    per full candidate reply (no cache, no batching, no padding)."""
    logp = {}
    for v in (0, 1):
        seq = frame.prefix + list(frame.words[v] + frame.then[v])
        with torch.no_grad():
            lp = lm(input_ids=torch.tensor([seq])).logits[0].float().log_softmax(-1)
        n = len(frame.prefix)
        logp[v] = sum(lp[n - 1 + k, seq[n + k]].item() for k in range(len(frame.words[v])))
        logp[v, "scores"] = lp[-1, list(frame.scores[v])].softmax(-1).tolist()
    verdict = 0 if logp[0] >= logp[1] else 1
    return 1 / (1 + math.exp(logp[1] - logp[0])), logp[verdict, "scores"], verdict == 0


def test_constrained_verdicts_of_several_token_words_equal_the_full_candidate_scores():
    """Batched, left-padded, shared-prefix scoring gives what scoring each full reply alone gives."""
    from llamavid_eval.judges.backends import constrained

    tok, lm = byte_level_llama(seed=0)
    judge = HFJudge.with_model("bytes", tok, lm, batch_size=2, device="cpu")
    out = judge.judge_many(REQS)
    rendered = [judge._render(tok, judge.prompt.messages(r)) for r in REQS]
    frames = constrained.frames(tok, rendered)
    assert [len(w) for w in frames[0].words] == [3, 2]  # y e s / n o: scored over every token
    for j, frame in zip(out, frames, strict=True):
        p_yes, scores, verdict = reference_choice(lm, frame)
        assert not j.failed and j.metadata["attempts"] == 1 and j.metadata["decoding"] == "constrained"
        assert j.verdict is verdict and j.metadata["p_yes"] == pytest.approx(p_yes, abs=1e-5)
        assert j.metadata["score_probs"] == pytest.approx(scores, abs=1e-5)
        assert j.score == max(range(6), key=lambda s: scores[s])
        assert j.raw == json.dumps({"pred": "yes" if verdict else "no", "score": j.score})
    assert judge._prefix is not None and len(judge._prefix[0]) > 100  # the system text was shared


def test_constrained_and_free_verdicts_are_cached_apart(tmp_path):
    from llamavid_eval.judges.cache import JudgementCache

    tok, lm = byte_level_llama(seed=1)
    cache = JudgementCache(tmp_path / "cache")
    free = HFJudge.with_model("bytes", tok, lm, device="cpu", cache=cache, decoding="free", max_new_tokens=4)
    constrained = HFJudge.with_model("bytes", tok, lm, device="cpu", cache=cache)
    free.judge_many(REQS[:1])
    first = constrained.judge_many(REQS[:1])[0]
    assert not first.cached and first.metadata["prompt_version"].endswith("+frame-v1")
    again = HFJudge.with_model("bytes", tok, lm, device="cpu", cache=cache).judge_many(REQS[:1])[0]
    assert again.cached and again.metadata["p_yes"] == first.metadata["p_yes"]
    assert free.name == constrained.name == "hf:bytes"  # the same judge model, named the same


def test_unknown_decoding_is_refused():
    with pytest.raises(ValueError, match="decoding must be one of constrained, free"):
        HFJudge("x", decoding="beam")


def test_out_of_memory_in_a_constrained_batch_fails_its_items_only(monkeypatch):
    from llamavid_eval.judges.backends import constrained

    tok, lm = byte_level_llama(seed=2)
    judge = HFJudge.with_model("bytes", tok, lm, batch_size=2, device="cpu")
    real, calls = constrained.choose, []

    def first_batch_out_of_memory(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(constrained, "choose", first_batch_out_of_memory)
    out = judge.judge_many(REQS)
    assert calls == [2, 1] and sum(j.failed for j in out) == 2  # batch 2 of 3 items: the second batch still runs
    assert all("lower LLAMAVID_JUDGE_BATCH_SIZE, now 2" in j.error for j in out if j.failed)
    assert [j.metadata["attempts"] for j in out] == [1, 1, 1]  # a failed batch is not re-asked


def test_the_heap_is_frozen_while_chunks_are_judged_and_unfrozen_after(monkeypatch):
    """No full collection of the libraries' objects between chunks; the collector left as found."""
    from llamavid_eval.judges.backends import constrained

    tok, lm = byte_level_llama(seed=2)
    judge = HFJudge.with_model("bytes", tok, lm, batch_size=2, device="cpu")
    real, frozen = constrained.choose, []

    def noting_the_heap(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(constrained, "choose", noting_the_heap)
    out = judge.judge_many(REQS)
    assert len(frozen) == 2 and min(frozen) > 0 and not any(j.failed for j in out)
    assert gc.get_freeze_count() == 0


def test_a_chunks_verdicts_are_cached_together_as_it_ends_and_kept_on_ctrl_c(tmp_path, monkeypatch):
    """Batch 2 over 3 items: two chunks, two cache transactions (not one per verdict); Ctrl-C in the second
    chunk keeps the first chunk's verdicts in the cache."""
    from llamavid_eval.judges.backends import constrained
    from llamavid_eval.judges.cache import JudgementCache

    tok, lm = byte_level_llama(seed=3)
    cache = JudgementCache(tmp_path / "cache")
    writes: list[int] = []
    real_put = JudgementCache.put_many
    monkeypatch.setattr(
        JudgementCache, "put_many", lambda self, items: writes.append(len(items)) or real_put(self, items)
    )
    HFJudge.with_model("bytes", tok, lm, batch_size=2, device="cpu", cache=cache).judge_many(REQS)
    assert writes == [2, 1] and len(cache) == 3

    real_choose, calls = constrained.choose, []

    def interrupted_in_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_choose(*args, **kwargs)

    monkeypatch.setattr(constrained, "choose", interrupted_in_the_second_chunk)
    other = JudgementCache(tmp_path / "other")
    with pytest.raises(KeyboardInterrupt):
        HFJudge.with_model("bytes", tok, lm, batch_size=2, device="cpu", cache=other).judge_many(REQS)
    assert len(other) == 2
