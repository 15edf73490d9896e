"""The judge preflight and error handling against servers that misbehave as real ones do (loopback fakes).

The llama-cpp-python case replays that server's answer to ``response_format: json_schema``: HTTP 500
with its error wrapper ``{"error": {"message": <pydantic's validation text>, "type":
"internal_server_error", ...}}``. The real server is not in the suite because building
llama-cpp-python from source takes ~9 minutes on 2 cores; ``transformers serve`` is
(tests/test_judges_real_server.py).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from llamavid_eval.judges import JudgeRequest, get_judge, resolve_settings
from llamavid_eval.judges.backends.openai_compat import LocalJudge
from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.preflight import JudgeUnavailable, check_once, preflight
from llamavid_eval.judges.testing import Call, FakeChatServer, Response, error, reply, word_judge

LLAMA_CPP_500 = Response(
    500,
    body={
        "error": {
            "message": "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be "
            "'text' or 'json_object' [type=literal_error, input_value='json_schema', input_type=str]",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    },
)
REQS = [JudgeRequest(f"What is shown in clip {i}?", "a cat", f"a cat number {i}") for i in range(30)]


@pytest.fixture(autouse=True)
def clean_env(judge_env):
    judge_env.setenv("LLAMAVID_JUDGE_CACHE", "off")


def llama_cpp(call: Call) -> Response:
    if call.body.get("response_format", {}).get("type") == "json_schema":
        return LLAMA_CPP_500
    return word_judge(call)


def local(url: str, **kw) -> LocalJudge:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 5.0)
    return LocalJudge(kw.pop("model", "judge"), api_key="EMPTY", base_url=url, **kw)


def settings(url: str, model: str = "judge", **config):
    return resolve_settings({"judge": "local", "judge_base_url": url, "judge_model": model, **config}, env={})


def test_llama_cpp_500_on_json_schema_falls_back_on_the_first_item():
    with FakeChatServer(llama_cpp) as server:
        judge = local(server.url, max_retries=5, concurrency=1)
        start = time.monotonic()
        out = judge.judge_many(REQS[:3])
        assert time.monotonic() - start < 2  # no backoff: a rejected format is not a crash
        formats = [c.body.get("response_format", {}).get("type") for c in server.calls]
        assert formats == ["json_schema", "json_object", "json_object", "json_object"]
        assert all(not j.failed and j.metadata["response_format"] == "json_object" for j in out)
        assert judge.response_format == "json_object"


def test_preflight_finds_the_format_and_the_rebuilt_judge_starts_with_it():
    with FakeChatServer(llama_cpp, models=["judge"]) as server:
        report = preflight(settings(server.url))
        assert report.response_format == "json_object" and report.served_models == ("judge",)
        assert "Input should be 'text' or 'json_object'" in report.format_note
        judge = get_judge({"judge": "local", "judge_base_url": server.url, "judge_model": "judge"})
        judge.judge_many(REQS[:2])
        assert [c.body["response_format"]["type"] for c in server.calls] == ["json_object"] * 2
        assert len(server.preflight_calls) == 2  # json_schema refused, json_object worked


def test_preflight_stops_within_seconds_on_a_closed_port():
    start = time.monotonic()
    with pytest.raises(JudgeUnavailable) as caught:
        check_once(settings("http://127.0.0.1:9/v1", "judge-x"))
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert "http://127.0.0.1:9/v1" in message and "'judge-x'" in message and "Connection refused" in message
    assert "LLAMAVID_JUDGE_PREFLIGHT=0" in message and "llamavid judge swap" in message


def test_preflight_names_the_served_models_and_the_servers_reason():
    def pinned(call: Call) -> Response:
        return Response(400, body={"detail": f"Server is pinned to 'judge'; requested '{call.body['model']}'."})

    with FakeChatServer(pinned, models=["judge"]) as server, pytest.raises(JudgeUnavailable) as caught:
        preflight(settings(server.url, "meta-llama/Meta-Llama-3-8B-Instruct"))
    message = str(caught.value)
    assert "Server is pinned to 'judge'; requested 'meta-llama/Meta-Llama-3-8B-Instruct'" in message
    assert "The server serves: judge." in message and len(server.preflight_calls) == 1  # permanent: asked once


def test_paper_judge_gone_says_what_to_do():
    def gone(call: Call) -> Response:
        return error(404, f"The model `{call.body['model']}` does not exist or you do not have access to it.")

    with FakeChatServer(gone) as server, pytest.raises(JudgeUnavailable) as caught:
        env = {"OPENAI_API_KEY": "sk-x"}
        preflight(resolve_settings({"judge": "openai", "judge_base_url": server.url}, env=env), env)
    message = str(caught.value)
    assert "'gpt-3.5-turbo'" in message and "does not exist" in message
    assert "2026-10-23" in message and "gpt-4.1-mini" in message


def test_server_ignoring_response_format_is_detected_and_recorded():
    def ignores(call: Call) -> Response:  # transformers serve: drops response_format, answers a Python dict
        return reply("{'pred': 'yes', 'score': 5}")

    with FakeChatServer(ignores) as server:
        plain = local(server.url).judge_many(REQS[:1])[0]
        assert plain.metadata["response_format"] == "none" and plain.metadata["response_format_sent"] == "json_schema"
        report = preflight(settings(server.url))
        assert report.response_format == "none" and "ignores response_format" in report.format_note
        judged = get_judge({"judge": "local", "judge_base_url": server.url, "judge_model": "judge"}).judge(REQS[1])
        assert "response_format" not in server.calls[-1].body
        assert judged.metadata["response_format"] == "none" and "ignores" in judged.metadata["response_format_note"]


def test_preflight_can_be_switched_off():
    s = resolve_settings(
        {"judge": "local", "judge_base_url": "http://127.0.0.1:9/v1"}, env={"LLAMAVID_JUDGE_PREFLIGHT": "0"}
    )
    assert s.preflight is False and check_once(s) is None
    with pytest.raises(ValueError, match="LLAMAVID_JUDGE_PREFLIGHT / judge_preflight must be yes/no"):
        resolve_settings(env={"LLAMAVID_JUDGE_PREFLIGHT": "maybe"})


def test_wrong_model_is_permanent_and_trips_the_breaker_once(caplog):
    def pinned(call: Call) -> Response:
        return Response(400, body={"detail": "Server is pinned to 'judge'; requested 'other'."})

    with FakeChatServer(pinned) as server:
        out = local(server.url, model="other", concurrency=1, max_retries=5, breaker_threshold=4).judge_many(REQS)
    assert len(server.calls) == 4  # no retries, no format fallback, then nothing more is sent
    assert all(j.failed for j in out) and "Server is pinned to 'judge'" in out[0].error
    assert sum("not sent: judge stopped after 4 consecutive model failures" in j.error for j in out) == 26
    assert caplog.text.count("judge stopped after") == 1


def test_a_down_server_ends_the_batch_quickly_and_caches_nothing(tmp_path):
    cache = JudgementCache(tmp_path)
    judge = local("http://127.0.0.1:9/v1", max_retries=5, backoff_base=0.5, concurrency=4, cache=cache)
    start = time.monotonic()
    out = judge.judge_many(REQS)  # without the breaker: 8 rounds of ~16 s of backoff each
    assert time.monotonic() - start < 9  # the breaker trips once failures have lasted its 3 s window
    assert len(out) == 30 and all(j.failed for j in out) and len(cache) == 0
    assert all("could not connect to the judge server" in j.error for j in out)
    assert sum("not sent: judge stopped after" in j.error for j in out) >= 20


def test_genuine_500_is_retried_and_its_message_kept():
    with FakeChatServer(lambda call: error(500, "CUDA out of memory while loading weights")) as server:
        out = local(server.url, max_retries=2, response_format="none").judge_many(REQS[:1])
    assert len(server.calls) == 3 and out[0].metadata["transport_retries"] == 2
    assert out[0].error.endswith("gave up after 3 tries: HTTP 500: CUDA out of memory while loading weights")


def test_bad_key_is_not_retried():
    with FakeChatServer(lambda call: error(401, "Invalid API key")) as server:
        out = local(server.url, max_retries=5).judge_many(REQS[:1])
    assert len(server.calls) == 1 and "HTTP 401: Invalid API key" in out[0].error


def test_local_judges_grow_to_64_in_flight_against_a_server_that_keeps_pace(monkeypatch):
    assert resolve_settings({"judge": "local"}, env={}).concurrency == 64
    assert resolve_settings({"judge": "openai"}, env={}).concurrency == 8
    assert resolve_settings({"judge": "local"}, env={"LLAMAVID_JUDGE_CONCURRENCY": "5"}).concurrency == 5
    with FakeChatServer(lambda call: reply('{"pred": "yes", "score": 5}', delay=0.3)) as server:
        local(server.url).judge_many([JudgeRequest(f"q{i}", "a", "p") for i in range(200)])
    assert server.max_active == 64  # 4, 8, 16, 32, 64: doubled each round while replies kept pace


def test_a_server_that_answers_one_at_a_time_is_not_swamped():
    lock = threading.Lock()

    def serial(call: Call) -> Response:
        with lock:  # one reply at a time, as transformers serve on a CPU
            time.sleep(0.1)
        return reply('{"pred": "yes", "score": 5}')

    with FakeChatServer(serial) as server:
        out = local(server.url).judge_many([JudgeRequest(f"q{i}", "a", "p") for i in range(40)])
    # replies queue up at once, so the limit stops growing within a slot or two of its start (4), not at 64
    assert all(not j.failed for j in out) and server.max_active <= 8


def test_429s_shrink_the_concurrency_and_everything_still_completes():
    state = {"served": 0}

    def overloaded(call: Call) -> Response:
        if server.active > 6:
            return error(429, "too many requests")
        state["served"] += 1
        return reply('{"pred": "yes", "score": 5}', delay=0.05)

    with FakeChatServer(overloaded) as server:
        judge = local(server.url, concurrency=32, max_retries=10, backoff_base=0.02, backoff_max=0.2)
        out = judge.judge_many([JudgeRequest(f"q{i}", "a", "p") for i in range(100)])
    assert all(not j.failed for j in out) and state["served"] == 100
    assert judge.limit.limit < 32  # halved on 429 (and growing back by ~1 per round of successes)


def test_a_key_in_a_long_server_message_is_masked_before_the_message_is_cut(caplog):
    """The key straddles the 400-character cut: masking after cutting would leave its first part."""
    key = "sk-test-SECRET123"
    with FakeChatServer(lambda call: error(401, "x" * 383 + " " + key)) as server:
        judge = LocalJudge("judge", api_key=key, base_url=server.url, breaker_threshold=1, max_retries=0)
        out = judge.judge_many(REQS[:3])
    texts = [j.error for j in out] + [caplog.text, *judge.server_messages.values()]
    assert all("sk-test" not in text for text in texts)
    # the long message is kept once, in full (and masked); each item cites it
    assert "***" in judge.server_messages["m1"] and all("[server message m1" in j.error for j in out)


def test_a_persistently_failing_server_trips_the_breaker_after_retries():
    """502s that outlast every item's retries count towards the breaker: the batch stops."""
    with FakeChatServer(lambda call: error(502, "Bad Gateway")) as server:
        out = local(server.url, concurrency=1, max_retries=1, breaker_threshold=3, response_format="none").judge_many(
            REQS
        )
    assert len(server.calls) == 6  # 3 items x 2 tries, then nothing more is sent
    assert all(j.failed for j in out)
    assert sum("not sent: judge stopped after 3 consecutive transient failures" in j.error for j in out) == 27


def test_quota_exhausted_is_permanent_and_not_retried():
    quota = "You exceeded your current quota, please check your plan and billing details."
    with FakeChatServer(lambda call: error(429, quota)) as server:
        out = local(server.url, max_retries=5).judge_many(REQS[:1])
    assert len(server.calls) == 1 and out[0].metadata["error_kind"] == "quota" and quota in out[0].error


def test_busy_status_with_format_words_is_retried_not_a_format_fallback():
    """A 503 whose message mentions guided decoding is 'not now', not 'this format is refused'."""
    answers = iter([error(503, "guided decoding backend busy, retry"), reply('{"pred": "yes", "score": 5}')])
    with FakeChatServer(lambda call: next(answers)) as server:
        out = local(server.url, max_retries=2, response_format="json_schema").judge_many(REQS[:1])
    assert not out[0].failed and out[0].metadata["response_format_sent"] == "json_schema"
    assert [c.body["response_format"]["type"] for c in server.calls] == ["json_schema", "json_schema"]


@pytest.mark.parametrize("body", [[], {"data": None}, {"models": ["judge"]}, {"data": [{"name": "judge"}]}])
def test_an_odd_model_list_leaves_the_decision_to_the_tiny_judgement(body):
    class OddModels(FakeChatServer):
        def _list_models(self, handler) -> None:
            data = json.dumps(body).encode()
            handler.send_response(200)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

    with OddModels(lambda call: reply('{"pred": "yes", "score": 5}')) as server:
        report = preflight(settings(server.url))
    assert report.response_format == "json_schema" and report.served_models in (None, ())


def test_a_rejected_key_says_which_variable_to_set_and_no_url_shows_a_key():
    url_key = "sk-test-INURL456"
    with FakeChatServer(lambda call: error(401, "Invalid API key")) as server:
        with pytest.raises(JudgeUnavailable) as caught:
            preflight(settings(f"{server.url}?api_key={url_key}"))
    message = str(caught.value)
    assert "OPENAI_API_KEY" in message and "LLAMAVID_JUDGE_API_KEY" in message and "HTTP 401" in message
    assert url_key not in message and "api_key=***" in message


def test_in_process_judge_with_a_wrong_path_stops_before_any_gpu_work(tmp_path):
    """``hf`` has no server: its preflight loads config and tokenizer, names the path and the fix, fast."""
    missing = tmp_path / "no-such-judge"
    start = time.monotonic()
    with pytest.raises(JudgeUnavailable) as failed:
        check_once(resolve_settings({"judge": "hf", "judge_model": str(missing)}, env={}))
    assert time.monotonic() - start < 5
    message = str(failed.value)
    assert str(missing) in message and "cannot load its config and tokenizer" in message
    assert "LLAMAVID_JUDGE_MODEL" in message and "URL" not in message


def test_in_process_judge_preflight_rejects_a_model_that_is_not_a_causal_lm(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_judges_hf import build

    folder = build(tmp_path / "judge", forced=True)
    transformers.ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "encoder"
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "encoder" / name).write_bytes((tmp_path / "judge" / name).read_bytes())
    with pytest.raises(JudgeUnavailable, match="'vit' model, which transformers cannot load as a causal LM"):
        preflight(resolve_settings({"judge": "hf", "judge_model": str(tmp_path / "encoder")}, env={}))
    settings = resolve_settings({"judge": "hf", "judge_model": folder}, env={})
    report = preflight(settings)
    assert report is not None and "config and tokenizer load" in report.summary()
    assert check_once(settings) is None  # checked once per process


def test_a_server_whose_replies_are_not_chat_completions_is_named_with_the_fix():
    with FakeChatServer(lambda call: Response(200, body="{not json")) as server:
        with pytest.raises(JudgeUnavailable) as caught:
            preflight(settings(server.url))
    message = str(caught.value)
    assert message.startswith(f"The judge cannot work: backend 'local', URL {server.url}, model 'judge'")
    assert "its reply is not an OpenAI chat completion" in message
    assert "Fix: point LLAMAVID_JUDGE_BASE_URL (--base-url) at an OpenAI-compatible server's /v1" in message


def test_the_fix_names_what_is_wrong_when_it_is_not_the_server(tmp_path, judge_env):
    """A bad prompt file, a missing key, an unusable cache folder: not "start the judge server"."""
    prompt = tmp_path / "p.yaml"
    prompt.write_text("system: s\nuser: 'Q: {question} A: {answer}'\nreask: r\n")  # no {prediction}
    with FakeChatServer() as server:
        with pytest.raises(JudgeUnavailable) as caught:
            preflight(settings(server.url, judge_prompt=str(prompt)))
        assert "Fix: fix the prompt file named above" in str(caught.value) and server.preflight_calls == []
        a_file = tmp_path / "a_file"
        a_file.write_text("")
        with pytest.raises(JudgeUnavailable) as caught:
            preflight(settings(server.url, judge_cache=str(a_file)))
        assert f"judge cache {a_file}/judgements.sqlite3 cannot be opened" in str(caught.value)
        assert "Fix: point LLAMAVID_JUDGE_CACHE (--cache) at a folder you can write" in str(caught.value)
    judge_env.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeUnavailable) as caught:
        preflight(resolve_settings({"judge": "openai"}, env={}), env={})
    assert "Fix: set the key: OPENAI_API_KEY" in str(caught.value)
    with pytest.raises(ValueError, match="LLAMAVID_JUDGE_TIMEOUT / judge_timeout is seconds per request"):
        resolve_settings(None, env={"LLAMAVID_JUDGE_TIMEOUT": "0"})


def test_openai_base_url_from_the_environment_is_the_url_records_name():
    s = resolve_settings({"judge": "openai"}, env={"OPENAI_BASE_URL": "http://proxy:1/v1"})
    assert s.base_url == "http://proxy:1/v1" and s.public()["base_url"] == "http://proxy:1/v1"
    assert resolve_settings({"judge": "openai"}, env={}).base_url is None


def test_url_credentials_are_masked_in_every_form_a_server_may_echo():
    """A password in the base URL travels as an ``Authorization: Basic`` header; a server that echoes the
    header must not print it either, nor the password decoded or the query's values."""
    import base64

    judge = local("http://user:se%40cretpw@127.0.0.1:9/v1?token=tok%2Fen123")
    basic = base64.b64encode(b"user:se@cretpw").decode()
    echoed = f"401 for Basic {basic}; password se@cretpw (se%40cretpw); token tok/en123"
    assert judge.redact(echoed) == "401 for Basic ***; password *** (***); token ***"
