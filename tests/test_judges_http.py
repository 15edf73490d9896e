"""The openai/local backends against a real HTTP server on loopback (llamavid_eval.judges.testing.FakeChatServer)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time

import pytest

from llamavid_eval.judges import JudgeRequest, get_judge, summarize
from llamavid_eval.judges.backends.openai_compat import LocalJudge, OpenAIJudge
from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.prompt import SYSTEM_PROMPT
from llamavid_eval.judges.testing import Call, FakeChatServer, error, reply, word_judge

REQS = [
    JudgeRequest("What is the man doing?", "running", "The man is running."),
    JudgeRequest("What animal is shown?", "cat", "A dog."),
    JudgeRequest("What color is the car?", "red", "It is red"),
]


@pytest.fixture()
def server():
    with FakeChatServer() as srv:
        yield srv


def local(server: FakeChatServer, **kw) -> LocalJudge:
    kw.setdefault("api_key", "EMPTY")
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 5.0)
    return LocalJudge("test-judge", base_url=server.url, **kw)


def test_normal_replies_keep_order_and_send_the_protocol(server):
    judge = local(server, concurrency=3)
    out = judge.judge_many(REQS)
    assert [(j.verdict, j.score, j.failed) for j in out] == [(True, 5, False), (False, 1, False), (True, 5, False)]
    assert {j.backend for j in out} == {"local"} and {j.model for j in out} == {"test-judge"}
    assert len(server.calls) == 3
    body = server.calls[0].body
    assert body["model"] == "test-judge" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert body["response_format"]["type"] == "json_schema"  # local + auto: the strongest structure first
    assert out[0].metadata["response_format"] == "json_schema"
    assert out[0].metadata["attempts"] == 1 and out[0].metadata["parse_failures"] == 0


def test_json_mode_accepted_by_openai_backend(server):
    judge = OpenAIJudge("gpt-3.5-turbo", api_key="sk-test", base_url=server.url, backoff_base=0.01)
    out = judge.judge_many(REQS[:1])
    assert out[0].verdict is True and out[0].metadata["response_format"] == "json_object"
    assert [c.body["response_format"] for c in server.calls] == [{"type": "json_object"}]


def test_structured_output_rejected_falls_back_to_plain_prompting(server):
    def script(call: Call):
        if "response_format" in call.body:
            return error(400, "response_format is not supported")
        return word_judge(call)

    server.script = script
    judge = local(server, concurrency=1)
    first = judge.judge_many(REQS[:1])
    assert first[0].verdict is True and first[0].metadata["response_format"] == "none"
    assert [c.body.get("response_format", {}).get("type") for c in server.calls] == ["json_schema", "json_object", None]
    assert judge.response_format == "none"
    judge.judge_many(REQS[1:])  # the downgrade is remembered: one call per item from now on
    assert len(server.calls) == 3 + 2


def test_unrelated_400_fails_the_item_but_keeps_structured_output(server):
    server.script = lambda call: error(400, "prompt too long")
    judge = local(server)
    out = judge.judge_many(REQS[:1])
    assert out[0].failed and out[0].verdict is None and "HTTP 400" in out[0].error
    assert len(server.calls) == 3  # each structure level tried once for this request
    assert judge.response_format == "json_schema"  # nothing succeeded without it, so nothing was dropped


def test_timeout_is_retried(server):
    server.script = lambda call: reply("{'pred': 'yes', 'score': 4}", delay=4.0 if call.n == 0 else 0)
    judge = local(server, timeout=0.3, max_retries=2)
    start = time.monotonic()
    out = judge.judge_many(REQS[:1])
    assert time.monotonic() - start < 3.0  # did not wait for the slow reply (4 s)
    assert (out[0].verdict, out[0].score) == (True, 4)
    assert out[0].metadata["transport_retries"] == 1 and len(server.calls) == 2


def test_429_then_success_honours_retry_after(server):
    server.script = lambda call: error(429, "slow down", retry_after="0.2") if call.n == 0 else word_judge(call)
    judge = local(server, max_retries=3)
    start = time.monotonic()
    out = judge.judge_many(REQS[:1])
    assert time.monotonic() - start >= 0.2
    assert out[0].verdict is True and out[0].metadata["transport_retries"] == 1 and len(server.calls) == 2


def test_500s_until_retries_exhausted_become_a_counted_failure(server):
    server.script = lambda call: error(500, "boom") if "running" in call.user_text else word_judge(call)
    judge = local(server, max_retries=2)
    out = judge.judge_many(REQS)
    assert out[0].failed and out[0].verdict is None and out[0].score is None
    assert "gave up after 3 tries" in out[0].error and "HTTP 500" in out[0].error
    assert out[0].metadata["transport_retries"] == 2
    assert sum("running" in c.user_text for c in server.calls) == 3
    s = summarize(out)
    assert s == {"n": 3, "accuracy": 50.0, "mean_score": 3.0, "failures": 1, "judge": "local:test-judge"}


def test_backoff_grows_exponentially(server):
    server.script = lambda call: error(503, "busy")
    judge = local(server, max_retries=3, backoff_base=0.05, backoff_max=10)
    stamps = []
    orig = judge._ask

    def ask(*a, **k):
        stamps.append(time.monotonic())
        return orig(*a, **k)

    judge._ask = ask  # type: ignore[method-assign]
    judge.judge_many(REQS[:1])
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # equal jitter: the n-th wait lies in [base*2^n/2, base*2^n]
    for n, gap in enumerate(gaps):
        assert 0.05 * 2**n / 2 <= gap <= 0.05 * 2**n + 0.15, gaps


def test_malformed_reply_is_reasked_with_the_reason(server):
    server.script = lambda call: (
        reply("I think the answer is right.") if call.n == 0 else reply('{"pred": "no", "score": 2}')
    )
    out = local(server).judge_many(REQS[:1])
    assert (out[0].verdict, out[0].score, out[0].failed) == (False, 2, False)
    assert out[0].metadata["attempts"] == 2 and out[0].metadata["parse_failures"] == 1
    assert out[0].metadata["parse_errors"] == ["no dictionary found in the reply"]
    second = server.calls[1].body["messages"]
    assert second[-2] == {"role": "assistant", "content": "I think the answer is right."}
    assert "could not be read (no dictionary found in the reply)" in second[-1]["content"]


def test_malformed_replies_are_bounded_and_counted(server):
    server.script = lambda call: reply("{'pred': 'maybe', 'score': 9}")
    out = local(server, parse_retries=2).judge_many(REQS[:2])
    assert all(j.failed and j.verdict is None for j in out)
    assert [j.metadata["parse_failures"] for j in out] == [3, 3] and len(server.calls) == 6
    assert out[0].error.startswith("unparseable reply after 3 attempt(s): pred must be 'yes' or 'no'")
    assert out[0].raw == "{'pred': 'maybe', 'score': 9}"
    assert summarize(out)["failures"] == 2 and summarize(out)["accuracy"] is None


def test_non_json_http_body_is_a_failure_not_an_exception(server):
    from llamavid_eval.judges.testing import Response

    server.script = lambda call: Response(200, body="<html>oops</html>")
    out = local(server, parse_retries=0).judge_many(REQS[:1])
    assert out[0].failed and out[0].error


def test_concurrency_bound_holds_even_across_callers(server):
    server.script = lambda call: reply("{'pred': 'yes', 'score': 5}", delay=0.05)
    judge = local(server, concurrency=3)
    many = [JudgeRequest(f"q{i}", "a", f"p{i}") for i in range(24)]
    threads = [threading.Thread(target=judge.judge_many, args=(many[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.calls) == 24
    assert server.max_active == 3


def test_cache_avoids_paying_twice_over_http(server, tmp_path):
    cache = JudgementCache(tmp_path)
    first = local(server, cache=cache).judge_many(REQS)
    second = local(server, cache=cache).judge_many(REQS)
    assert len(server.calls) == 3
    assert [j.cached for j in first] == [False] * 3 and [j.cached for j in second] == [True] * 3
    assert [(j.verdict, j.score) for j in second] == [(j.verdict, j.score) for j in first]


def test_identical_items_in_one_batch_are_asked_once(server):
    out = local(server).judge_many([REQS[0], REQS[1], REQS[0]])
    assert len(server.calls) == 2 and out[0].verdict == out[2].verdict is True


SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def _debug_where(texts):
    """Where a leaked key sits, for the assertion message."""
    return [t[max(0, t.find("sk-test-DO") - 200) : t.find("sk-test-DO") + 50] for t in texts if "sk-test-DO" in t]


def test_api_key_is_sent_but_never_written(server, tmp_path, monkeypatch, caplog, capsys):
    from llamavid_eval.judges.__main__ import main

    def script(call: Call):
        if "cat" in call.user_text:  # like OpenAI, echo the key back in an auth error
            return error(401, f"Incorrect API key provided: {SECRET}.")
        return word_judge(call)

    server.script = script
    for var in ("LLAMAVID_JUDGE", "LLAMAVID_JUDGE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("LLAMAVID_JUDGE_BASE_URL", server.url)
    monkeypatch.setenv("LLAMAVID_JUDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLAMAVID_JUDGE_EXAM", "0")  # a scripted judge, unfit by design
    caplog.set_level(logging.DEBUG)

    judge = get_judge({"judge": "openai"})
    out = judge.judge_many(REQS)
    assert {c.headers["authorization"] for c in server.calls} == {f"Bearer {SECRET}"}
    assert out[1].failed and "HTTP 401" in out[1].error and "***" in out[1].error

    samples = tmp_path / "run" / "m"
    samples.mkdir(parents=True)
    line = {"doc_id": 0, "target": "cat", "acc": {"id": 7, **dataclasses.asdict(REQS[1])}}
    (samples / "20250101_000000_samples_demo.jsonl").write_text(json.dumps(line) + "\n")
    assert main(["rejudge", str(tmp_path / "run"), "--max-failure-rate", "1"]) == 0  # the 401 item fails
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith("_items.jsonl") for p in written) and any(p.suffix == ".sqlite3" for p in written)
    texts = [repr(judge), str(vars(judge)), json.dumps([j.to_dict() for j in out]), caplog.text, *capsys.readouterr()]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in written]
    assert "sk-test-DO" not in "".join(texts), _debug_where(texts)
    assert "Incorrect API key provided: ***" in "".join(texts)  # the error itself was kept, masked


def test_local_backend_never_sends_the_openai_key(server, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("LLAMAVID_JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("LLAMAVID_JUDGE_CACHE", "off")
    judge = get_judge({"judge": "local", "judge_base_url": server.url})
    judge.judge_many(REQS[:1])
    assert server.calls[0].headers["authorization"] == "Bearer EMPTY"
    monkeypatch.setenv("LLAMAVID_JUDGE_API_KEY", "local-key-123")
    get_judge({"judge": "local", "judge_base_url": server.url}).judge_many(REQS[1:2])
    assert server.calls[1].headers["authorization"] == "Bearer local-key-123"


def test_a_server_answering_as_another_model_labels_the_verdicts_with_it(server, tmp_path, caplog, judge_env):
    """llama.cpp ignores the model name: a typo must not label every verdict and cache entry."""
    from llamavid_eval.judges.factory import build_judge, resolve_settings
    from llamavid_eval.judges.preflight import preflight

    server.script = lambda call: dataclasses.replace(word_judge(call), model="smollm2")
    judge = local(server, cache=JudgementCache(tmp_path))
    judge.model = "smollm2-typo"
    out = judge.judge_many(REQS)
    assert {j.model for j in out} == {"smollm2"} and judge.name == "local:smollm2"
    assert {j.metadata["requested_model"] for j in out} == {"smollm2-typo"}
    assert sum("answers as model 'smollm2'" in r.message for r in caplog.records) == 1  # warned once
    settings = resolve_settings(
        overrides={"backend": "local", "model": "smollm2-typo", "base_url": server.url, "cache": str(tmp_path)}
    )
    report = preflight(settings)
    assert report.served_model == "smollm2" and "as model 'smollm2'" in report.summary()
    again = build_judge(settings).judge_many(REQS)  # labelled with the served name from the start: cache hits
    assert all(j.cached and j.model == "smollm2" for j in again) and len(server.calls) == len(REQS)


def test_a_reply_cut_at_the_token_limit_is_truncated_not_an_ignored_format(server):
    server.script = lambda call: dataclasses.replace(reply('{"pred": "yes", "sc'), finish_reason="length")
    out = local(server, response_format="json_object", parse_retries=0).judge_many(REQS[:1])
    meta = out[0].metadata
    assert out[0].failed and meta["truncated"] is True and meta["response_format"] == "json_object"


def test_a_long_server_error_is_kept_once_and_items_cite_it(server, tmp_path, caplog):
    from llamavid_eval.judges.rejudge import rejudge

    trace = "Traceback (most recent call last):\n" + "".join(
        f'  File "/srv/app/m{i}.py", line {i}\n' for i in range(30)
    )
    server.script = lambda call: error(500, trace + "RuntimeError: boom")
    run = tmp_path / "run" / "m"
    run.mkdir(parents=True)
    lines = [{"doc_id": i, "acc": {"id": i, **dataclasses.asdict(r)}} for i, r in enumerate(REQS)]
    (run / "20250101_000000_samples_demo.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    judge = local(server, max_retries=0, response_format="none")
    overview = rejudge(tmp_path / "run", judge)
    full = judge.server_messages["m1"]
    assert list(judge.server_messages) == ["m1"] and full.startswith("HTTP 500: Traceback")
    rows = [json.loads(x) for x in open(overview["runs"][0]["items"])]
    assert all(r["failed"] and "[server message m1" in r["error"] and len(r["error"]) < 300 for r in rows)
    assert overview["runs"][0]["rejudge"]["server_messages"] == {"m1": full}
    assert sum(full in r.message for r in caplog.records) == 1  # logged once, not per item
