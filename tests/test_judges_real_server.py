"""The local judge against a REAL OpenAI-compatible server: ``transformers serve`` with a tiny model written here.

It ignores ``response_format`` (answers 200, logs "Ignoring unsupported fields"), answers a wrong model
name with FastAPI's ``{"detail": "Server is pinned to ..."}``, serves one request at a time. The
last test is the issue's done-when check: ``lmms-eval --model llamavid --tasks msvd_qa`` against a
closed port or a wrong model stops before the video model generates anything, naming URL, model
and the server's reason. (llama-cpp-python is covered by a replay in test_judges_preflight.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from judge_servers import start_transformers_serve, write_verdict_model
from llamavid_eval.judges import JudgeRequest, resolve_settings
from llamavid_eval.judges.backends.openai_compat import LocalJudge
from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.preflight import JudgeUnavailable, preflight
from test_tasks_support import video_qa_raw

pytestmark = pytest.mark.slow
REQS = [JudgeRequest(f"What is the animal doing in clip {i}?", "running", f"It runs, take {i}.") for i in range(16)]
CONCURRENCY, SERVED_BEFORE_KILL = 2, 4
DONE = re.compile(r'"POST /v1/chat/completions HTTP/1.1" 200')


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_verdict_model(tmp_path_factory.mktemp("verdict-model"))


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    server = start_transformers_serve(model_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


def judge_for(url: str, model: str, **kw) -> LocalJudge:
    kw.setdefault("timeout", 30.0)
    kw.setdefault("backoff_base", 0.05)
    return LocalJudge(model, api_key="EMPTY", base_url=url, **kw)


def test_judgements_from_a_real_server_record_the_ignored_format(served, tmp_path):
    cache = JudgementCache(tmp_path)
    out = judge_for(served.url, served.model, concurrency=4, cache=cache).judge_many(REQS[:4])
    assert [(j.verdict, j.score, j.failed) for j in out] == [(True, 5, False)] * 4
    assert all(j.metadata["response_format"] == "none" and j.metadata["response_format_sent"] == "json_schema"
               for j in out)  # fmt: skip
    assert len(cache) == 4 and "Ignoring unsupported fields in the request: {'response_format'}" in served.log_text()


def test_preflight_detects_the_ignored_format_and_lists_the_model(served):
    report = preflight(resolve_settings({"judge": "local", "judge_base_url": served.url, "judge_model": served.model},
                                        env={}))  # fmt: skip
    assert report.served_models == (served.model,)
    assert report.response_format == "none" and "ignores response_format" in report.format_note


def test_pinned_model_mismatch_surfaces_the_servers_reason(served):
    wrong = "meta-llama/Meta-Llama-3-8B-Instruct"
    out = judge_for(served.url, wrong, max_retries=5).judge_many(REQS[:1])
    assert out[0].failed and out[0].metadata["transport_retries"] == 0
    assert f"HTTP 400: Server is pinned to '{served.model}'; requested '{wrong}'." in out[0].error
    start = time.monotonic()
    with pytest.raises(JudgeUnavailable) as caught:
        preflight(resolve_settings({"judge": "local", "judge_base_url": served.url, "judge_model": wrong}, env={}))
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert served.url in message and wrong in message and "Server is pinned to" in message
    assert f"The server serves: {served.model}." in message


def test_killed_mid_batch_loses_nothing_and_the_rerun_completes_from_cache(model_dir, tmp_path):
    cache = JudgementCache(tmp_path / "cache")
    server = start_transformers_serve(model_dir, tmp_path / "first.log")
    result: list = []
    try:
        judge = judge_for(server.url, server.model, concurrency=CONCURRENCY, max_retries=2, cache=cache)
        worker = threading.Thread(target=lambda: result.extend(judge.judge_many(REQS)))
        worker.start()
        deadline = time.monotonic() + 60
        while len(DONE.findall(server.log_text())) < SERVED_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        server.stop()
    worker.join(timeout=60)
    assert len(result) == len(REQS)  # every item is there: judged or recorded as failed
    done = [j for j in result if not j.failed]
    failed = [j for j in result if j.failed]
    # the server logs a 200 as it starts a reply; up to CONCURRENCY of those replies may die unread with it
    assert SERVED_BEFORE_KILL - CONCURRENCY <= len(done) < len(REQS) and failed and len(cache) == len(done)
    assert all("connect" in j.error or "disconnect" in j.error.lower() for j in failed), failed[0].error

    server = start_transformers_serve(model_dir, tmp_path / "second.log")
    try:
        rerun = judge_for(server.url, server.model, concurrency=2, cache=cache).judge_many(REQS)
    finally:
        server.stop()
    assert all(not j.failed for j in rerun) and sum(j.cached for j in rerun) == len(done)
    assert len(DONE.findall(server.log_text())) == len(failed)  # only the lost items were asked again


@pytest.mark.parametrize("case", ["closed port", "wrong model"])
def test_lmms_eval_stops_before_the_video_model_runs(case, served, tiny_release, tmp_path):
    root = tmp_path / "data"
    env = {**os.environ, "LLAMAVID_DATA_ROOT": str(root), "LLAMAVID_JUDGE_CACHE": "off", "LLAMAVID_JUDGE": "local"}
    qa, videos = video_qa_raw(tmp_path / "raw")
    bin_dir = Path(sys.executable).parent
    prepare = [str(bin_dir / "llamavid"), "prepare", "msvd_qa", "--qa", str(qa), "--videos", str(videos)]
    subprocess.run(prepare, env=env, check=True, capture_output=True, timeout=300)
    if case == "closed port":
        url, model, reason = "http://127.0.0.1:9/v1", served.model, "Connection refused"
    else:
        url, model, reason = served.url, "meta-llama/Meta-Llama-3-8B-Instruct", "Server is pinned to"
    env.update(LLAMAVID_JUDGE_BASE_URL=url, LLAMAVID_JUDGE_MODEL=model)
    model_args = f"pretrained={tiny_release.checkpoint},qformer_tokenizer={tiny_release.bert_tokenizer},dtype=fp32"
    command = [str(bin_dir / "lmms-eval"), "--model", "llamavid", "--model_args", model_args, "--tasks", "msvd_qa",
               "--batch_size", "2", "--output_path", str(tmp_path / "out"), "--log_samples"]  # fmt: skip
    start = time.monotonic()
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert "The judge cannot work" in log and url in log and model in log and reason in log, log[-4000:]
    # lmms-eval exits 0 after "Error during evaluation"; what matters is that no question reached the model
    assert "Running generate_until requests" not in log and "llamavid generate" not in log, log[-4000:]
    assert not list((tmp_path / "out").rglob("*_samples_*.jsonl"))
    assert time.monotonic() - start < 120
