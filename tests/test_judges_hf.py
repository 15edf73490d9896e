"""The ``hf`` backend with tiny Llamas built here: garbage replies become counted failures; batching,
left padding, decoding and parsing work end to end; a checkpoint's sampling defaults are ignored."""

from __future__ import annotations

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
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8, parse_retries=1)
    out = judge.judge_many(REQS)
    assert [j.failed for j in out] == [True, True, True]
    assert all(j.verdict is None and j.score is None for j in out)
    assert [j.metadata["parse_failures"] for j in out] == [2, 2, 2]
    assert all(j.error.startswith("unparseable reply after 2 attempt(s)") for j in out)
    s = summarize(out)
    assert (s["n"], s["failures"], s["accuracy"], s["judge"]) == (3, 3, None, f"hf:{path}")
    again = HFJudge(path, batch_size=3, device="cpu", max_new_tokens=8, parse_retries=1).judge_many(REQS)
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
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8)
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
    out = HFJudge(path, batch_size=3, device="cpu", max_new_tokens=8).judge_many(REQS)
    assert [j.raw for j in out] == ["{'pred': 'yes', 'score': 4}"] * 3


def test_shared_prefix_and_length_sorting_give_plain_generate_replies(tmp_path):
    """Replies equal one-prompt-at-a-time ``generate`` (cut after the first token holding ``}``)."""
    from llamavid_eval.judges.prompt import build_messages

    path = build(tmp_path / "random", forced=False)
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8, parse_retries=0)
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
    judge = HFJudge(path, batch_size=2, device="cpu", max_new_tokens=8, parse_retries=0)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(judge, "_generate", out_of_memory)
    out = judge.judge_many(REQS)
    assert all(j.failed for j in out)
    assert all("lower LLAMAVID_JUDGE_BATCH_SIZE, now 2" in j.error for j in out)
