"""The local judge against a REAL OpenAI-compatible server: ``transformers serve`` (default) or, with
``LLAMAVID_TEST_JUDGE_SERVER=llama_cpp``, llama-cpp-python's server (``bash tests/real_servers.sh``
installs it and runs this module so; CI does not: it builds from source, 4-16 minutes on 2 cores).

Two models behind it: a tiny scripted one written here (exact, fast replies) and the real open-weights
SmolLM2-135M-Instruct (the ``smollm2_folder`` fixture), whose free-text replies often do not parse -
those tests assert the machinery (every item recorded, failures counted, nothing received lost), not
its accuracy. The server ignores ``response_format`` (answers 200, logs "Ignoring unsupported
fields"), answers a wrong model name with FastAPI's ``{"detail": "Server is pinned to ..."}``, and
serves one request at a time. ``lmms-eval --model llamavid --tasks msvd_qa`` against a closed port or
a wrong model stops before the video model generates anything, naming URL, model and the server's
reason; judged through ``LLAMAVID_JUDGE*``, its results.json names that judge. Ctrl-C and SIGTERM
stop ``llamavid judge rejudge`` keeping every verdict received. (llama-cpp-python is covered by a
replay in test_judges_preflight.py, and by this module under ``LLAMAVID_TEST_JUDGE_SERVER=llama_cpp``.)

Under llama.cpp both server fixtures serve the real SmolLM2 ``.gguf`` (no scripted model in GGUF), and
the facts differ: ``json_schema`` is rejected with HTTP 500 ("Input should be 'text' or 'json_object'"),
``json_object`` is honoured, and any model name is answered (the name asked for is echoed back). Tests whose
subject is a ``transformers serve`` fact say so in their skip reason; each has a llama.cpp counterpart.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from judge_servers import (
    ServedModel,
    chat,
    start_llama_cpp_server,
    start_transformers_serve,
    write_verdict_model,
)
from test_tasks_support import video_qa_raw

from llamavid_eval.judges import JudgeRequest, resolve_settings
from llamavid_eval.judges.__main__ import main
from llamavid_eval.judges.backends.openai_compat import VERDICT_SCHEMA, LocalJudge
from llamavid_eval.judges.cache import DB_NAME, JudgementCache
from llamavid_eval.judges.preflight import JudgeUnavailable, preflight

pytestmark = pytest.mark.slow
REQS = [JudgeRequest(f"What is the animal doing in clip {i}?", "running", f"It runs, take {i}.") for i in range(16)]
CONCURRENCY, SERVED_BEFORE_KILL = 2, 4
DONE = re.compile(r'"POST /v1/chat/completions HTTP/1.1" 200')
SERVER = os.environ.get("LLAMAVID_TEST_JUDGE_SERVER", "transformers")
if SERVER not in ("transformers", "llama_cpp"):
    raise ValueError(f"LLAMAVID_TEST_JUDGE_SERVER must be transformers or llama_cpp; got {SERVER!r}")
LLAMA_CPP = SERVER == "llama_cpp"


def transformers_only(counterpart: str):
    return pytest.mark.skipif(LLAMA_CPP, reason=f"a fact of transformers serve; under llama.cpp see {counterpart}")


def llama_cpp_only(reason: str):
    return pytest.mark.skipif(not LLAMA_CPP, reason=f"a fact of llama-cpp-python's server ({reason}); "
                              "run with LLAMAVID_TEST_JUDGE_SERVER=llama_cpp (bash tests/real_servers.sh)")  # fmt: skip


def start_server(model: Path, log: Path) -> ServedModel:
    """The server under test for ``model`` (a folder for transformers serve, a ``.gguf`` for llama.cpp)."""
    if not LLAMA_CPP:
        return start_transformers_serve(model, log)
    try:
        return start_llama_cpp_server(model, log)
    except RuntimeError as err:
        pytest.fail(f"LLAMAVID_TEST_JUDGE_SERVER=llama_cpp: {err}", pytrace=False)


@pytest.fixture(scope="module")
def model_dir(request, tmp_path_factory) -> Path:
    """transformers serve: the scripted verdict model; llama.cpp: the real SmolLM2 ``.gguf``."""
    if LLAMA_CPP:
        return request.getfixturevalue("smollm2_gguf")
    return write_verdict_model(tmp_path_factory.mktemp("verdict-model"))


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    server = start_server(model_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()


def judge_for(url: str, model: str, **kw) -> LocalJudge:
    kw.setdefault("timeout", 30.0)
    kw.setdefault("backoff_base", 0.05)
    return LocalJudge(model, api_key="EMPTY", base_url=url, **kw)


@transformers_only("test_llama_cpp_rejects_json_schema_and_honours_json_object")
def test_judgements_from_a_real_server_record_the_ignored_format(served, tmp_path):
    cache = JudgementCache(tmp_path)
    out = judge_for(served.url, served.model, concurrency=4, cache=cache).judge_many(REQS[:4])
    assert [(j.verdict, j.score, j.failed) for j in out] == [(True, 5, False)] * 4
    assert all(j.metadata["response_format"] == "none" and j.metadata["response_format_sent"] == "json_schema"
               for j in out)  # fmt: skip
    assert len(cache) == 4 and "Ignoring unsupported fields in the request: {'response_format'}" in served.log_text()


@transformers_only("test_llama_cpp_rejects_json_schema_and_honours_json_object")
def test_preflight_detects_the_ignored_format_and_lists_the_model(served):
    report = preflight(resolve_settings({"judge": "local", "judge_base_url": served.url, "judge_model": served.model},
                                        env={}))  # fmt: skip
    assert report.served_models == (served.model,)
    assert report.response_format == "none" and "ignores response_format" in report.format_note


@transformers_only("test_llama_cpp_answers_any_model_name_and_echoes_it")
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


LLAMA_CPP_REJECTS = "Input should be 'text' or 'json_object'"


@llama_cpp_only("json_schema is HTTP 500, json_object honoured")
def test_llama_cpp_rejects_json_schema_and_honours_json_object(served, tmp_path):
    status, body = chat(served.url, served.model, "Say hi", response_format=VERDICT_SCHEMA, max_tokens=8)
    assert status == 500 and LLAMA_CPP_REJECTS in body["error"]["message"], body
    cache = JudgementCache(tmp_path)
    judge = judge_for(served.url, served.model, concurrency=4, cache=cache)
    out = judge.judge_many(REQS[:4])
    assert len(out) == 4 and len(cache) == sum(not j.failed for j in out)
    # the 500 is a format refusal: the same request goes again with json_object, whose reply is a JSON object
    assert all(j.metadata["response_format_sent"] == "json_object" and j.metadata["transport_retries"] == 0
               for j in out), [j.metadata for j in out]  # fmt: skip
    assert all(j.metadata["response_format"] == "json_object" for j in out if not j.metadata.get("truncated"))
    assert any(LLAMA_CPP_REJECTS in m for m in judge.server_messages.values()), judge.server_messages
    report = preflight(resolve_settings({"judge": "local", "judge_base_url": served.url, "judge_model": served.model},
                                        env={}))  # fmt: skip
    assert report.served_models == (served.model,) and report.served_model is None
    assert report.format_note.startswith("json_schema rejected (HTTP 500") and LLAMA_CPP_REJECTS in report.format_note
    # SmolLM2's JSON object for the probe may lack 'pred'; then the preflight steps down to free text
    assert report.response_format == "json_object" or "json_object: reply" in report.format_note, report


@llama_cpp_only("any model name is answered, and echoed")
def test_llama_cpp_answers_any_model_name_and_echoes_it(served, caplog):
    wrong = "meta-llama/Meta-Llama-3-8B-Instruct"
    status, body = chat(served.url, wrong, "Say hi", max_tokens=4)
    assert status == 200 and body["model"] == wrong  # the reply cannot tell that another model answered
    judge = judge_for(served.url, wrong)
    out = judge.judge_many(REQS[:1])
    assert "error_kind" not in out[0].metadata and out[0].metadata["transport_retries"] == 0, out[0]
    assert judge.served_model is None and judge.label == wrong
    caplog.set_level(logging.WARNING, logger="judges")
    report = preflight(resolve_settings({"judge": "local", "judge_base_url": served.url, "judge_model": wrong}, env={}))
    assert report.model == wrong and report.served_models == (served.model,) and report.served_model is None
    assert f"the server does not list model {wrong!r}" in caplog.text  # the only sign: its model list


def test_killed_mid_batch_loses_nothing_and_the_rerun_completes_from_cache(model_dir, tmp_path):
    cache = JudgementCache(tmp_path / "cache")
    server = start_server(model_dir, tmp_path / "first.log")
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

    server = start_server(model_dir, tmp_path / "second.log")
    try:
        rerun = judge_for(server.url, server.model, concurrency=2, cache=cache).judge_many(REQS)
    finally:
        server.stop()
    assert all(not j.failed for j in rerun) and sum(j.cached for j in rerun) == len(done)
    assert len(DONE.findall(server.log_text())) == len(failed)  # only the lost items were asked again


@pytest.mark.parametrize(
    "case",
    [
        "closed port",
        pytest.param("wrong model", marks=transformers_only("test_llama_cpp_answers_any_model_name_and_echoes_it")),
    ],
)
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


#: A prompt SmolLM2-135M answers with a dictionary for 7 of the 8 items below when they carry no question
#: (the built-in prompt, or any question in view, mostly gets the question answered in prose): for the
#: test that needs verdicts to arrive. Literal braces are doubled, as prompt files write them.
SMOL_PROMPT = {
    "system": "You are a grader. You output only a dictionary like {{'pred': 'no', 'score': 0}} or "
    "{{'pred': 'yes', 'score': 5}}.",
    "user": "{question}Correct: {answer}\nPredicted: {prediction}\nDictionary:",
}
SMOL_ITEMS = [
    ("What is the animal doing?", "running", "It runs."),
    ("What colour is the car?", "red", "blue"),
    ("Who runs?", "girl", "a boy"),
    ("Where is this?", "beach", "at the beach"),
    ("What is he holding?", "cup", "a cup"),
    ("What animal is shown?", "dog", "a cat"),
    ("What is the man doing?", "cooking", "he cooks"),
    ("How many people?", "two", "three"),
]


@pytest.fixture(scope="module")
def smol(request, tmp_path_factory):
    """The server under test with the real SmolLM2-135M-Instruct (transformers serve: the folder converted
    from the ``.gguf``; llama.cpp: the ``.gguf`` itself)."""
    model = request.getfixturevalue("smollm2_gguf" if LLAMA_CPP else "smollm2_folder")
    server = start_server(model, tmp_path_factory.mktemp("smol") / "serve.log")
    yield server
    server.stop()


def lmms_run(root: Path, items: list[tuple[str, str, str]]) -> Path:
    """An lmms-eval output folder with one logged run of judged ``items`` (no video model needed)."""
    folder = root / "org__model"
    folder.mkdir(parents=True)
    lines = []
    for i, (question, answer, prediction) in enumerate(items):
        record = {"id": i, "question": question, "answer": answer, "prediction": prediction, "video": f"v{i}"}
        lines.append({"doc_id": i, "target": answer, "accuracy": record})
    (folder / "20250101_100000_samples_msvd_qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def rejudge_args(server, source: Path, out: Path, *extra: str) -> list[str]:
    return ["rejudge", str(source), "--judge", "local", "--judge-model", server.model, "--base-url", server.url,
            "--out", str(out), "--max-failure-rate", "1", *extra]  # fmt: skip


def cached(folder: Path) -> int:
    """Verdicts in the cache folder, read as another process would."""
    try:
        with sqlite3.connect(folder / DB_NAME) as con:
            return con.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def answered(server) -> int:
    """Replies the server has logged; waits until it has finished what it was given (a killed client's
    requests are still served, one at a time)."""
    count, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 2.5:
        now = len(DONE.findall(server.log_text()))
        if now != count:
            count, stable_since = now, time.monotonic()
        time.sleep(0.2)
    return count


def test_rejudge_through_a_real_model_records_every_item(smol, tmp_path, judge_env, capsys):
    """Issue 21 item 4, the server half: SmolLM2's free text often does not parse; every item is recorded,
    verdict or counted failure with its rejected replies, and only verdicts are cached."""
    cache = tmp_path / "judge-cache"
    rc = main(rejudge_args(smol, lmms_run(tmp_path / "run", SMOL_ITEMS[:3]), tmp_path / "out", "--parse-retries", "0"))
    err = capsys.readouterr().err
    assert rc == 0 and f"judge local:{smol.model} at {smol.url} answers" in err  # the preflight, printed
    rows = [json.loads(line) for line in next((tmp_path / "out").rglob("*_items.jsonl")).read_text().splitlines()]
    assert len(rows) == 3 and {r["judge"] for r in rows} == {f"local:{smol.model}"}
    for row in rows:
        if row["failed"]:
            assert row["verdict"] is None and row["error"].startswith(("unparseable reply", "no reply"))
            assert row["metadata"]["rejected_replies"] or row["metadata"].get("error_kind")
        else:
            assert isinstance(row["verdict"], bool) and row["score"] in range(6)
        if not row["error"] or row["error"].startswith("unparseable"):  # a reply came: the preflight's finding
            note = row["metadata"]["response_format_note"]
            if LLAMA_CPP:  # json_schema refused with a 500; json_object honoured (or its JSON lacked a verdict)
                assert note.startswith("json_schema rejected (HTTP 500") and LLAMA_CPP_REJECTS in note, note
            else:  # transformers serve ignores response_format
                assert "ignores response_format" in note
    summary = json.loads(next((tmp_path / "out").rglob("*_summary.json")).read_text())
    assert summary["results"]["msvd_qa"]["failures"] == sum(r["failed"] for r in rows)
    assert cached(cache) == sum(not r["failed"] for r in rows)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_keeps_every_verdict_and_the_rerun_asks_only_the_rest(sig, smol, tmp_path, judge_env):
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps(SMOL_PROMPT))
    cache = tmp_path / "judge-cache"
    args = rejudge_args(smol, lmms_run(tmp_path / "run", [("", a, p) for _, a, p in SMOL_ITEMS]), tmp_path / "out", "--judge-prompt", str(prompt),
                        "--parse-retries", "0")  # fmt: skip
    env = {**os.environ, "LLAMAVID_JUDGE_PREFLIGHT": "0"}  # judge_env's cache folder, no exam, and no preflight
    before = answered(smol)
    process = subprocess.Popen([str(Path(sys.executable).parent / "llamavid"), "judge", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while cached(cache) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(sig)
    sent = time.monotonic()
    _, err = process.communicate(timeout=60)
    took = time.monotonic() - sent
    # at once (the requests in flight are abandoned), no traceback, the shell's exit code for the signal
    assert process.returncode == 128 + sig and "Traceback" not in err and took < 5, err[-3000:]
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(
        rf"interrupted by {sig.name}: judge local:\S+ has (\d+) verdict\(s\) in the cache and (\d+) item\(s\) "
        r"left; rerun the same command: it asks only the items without a cached verdict",
        last,
    )
    assert found, last
    kept, left = int(found[1]), int(found[2])
    assert kept == cached(cache) and kept >= 2 and kept + left == 8  # every verdict received is in the cache
    assert not list((tmp_path / "out").rglob("*_items.jsonl"))  # no half-written results

    asked = answered(smol)
    assert asked - before >= kept
    judge_env.setenv("LLAMAVID_JUDGE_PREFLIGHT", "0")
    assert main(args) == 0
    assert answered(smol) - asked == left  # the rerun asked only what had no verdict
    rows = [json.loads(line) for line in next((tmp_path / "out").rglob("*_items.jsonl")).read_text().splitlines()]
    assert len(rows) == 8 and sum(r["cached"] for r in rows) == kept


def test_lmms_eval_results_name_the_judge_the_environment_chose(smol, tiny_release, tmp_path):
    """The msvd_qa YAML says judge: openai / gpt-3.5-turbo; judged through LLAMAVID_JUDGE*, results.json
    must name the judge that was used (real SmolLM2 behind transformers serve)."""
    env = {**os.environ, "LLAMAVID_DATA_ROOT": str(tmp_path / "data"), "LLAMAVID_JUDGE_CACHE": str(tmp_path / "cache"),
           "LLAMAVID_JUDGE": "local", "LLAMAVID_JUDGE_BASE_URL": smol.url, "LLAMAVID_JUDGE_MODEL": smol.model,
           "LLAMAVID_JUDGE_EXAM": "0", "LLAMAVID_JUDGE_PARSE_RETRIES": "0"}  # fmt: skip
    qa, videos = video_qa_raw(tmp_path / "raw")
    bin_dir = Path(sys.executable).parent
    prepare = [str(bin_dir / "llamavid"), "prepare", "msvd_qa", "--qa", str(qa), "--videos", str(videos)]
    subprocess.run(prepare, env=env, check=True, capture_output=True, timeout=300)
    model_args = f"pretrained={tiny_release.checkpoint},qformer_tokenizer={tiny_release.bert_tokenizer},dtype=fp32"
    command = [str(bin_dir / "lmms-eval"), "--model", "llamavid", "--model_args", model_args, "--tasks", "msvd_qa",
               "--batch_size", "1", "--limit", "1", "--output_path", str(tmp_path / "out")]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert f"judge local:{smol.model} at {smol.url} answers" in log, log[-4000:]  # the preflight, in lmms-eval's log
    results = json.loads(next((tmp_path / "out").rglob("*_results.json")).read_text())
    meta = results["configs"]["msvd_qa"]["metadata"]
    assert (meta["judge"], meta["judge_model"], meta["judge_base_url"]) == ("local", smol.model, smol.url)
    assert "gpt-3.5-turbo" not in json.dumps(meta)


def test_swap_of_exact_and_the_real_judge_fails_when_a_third_judge_fails_every_item(smol, tmp_path, judge_env, capsys):
    """Exact match vs the real SmolLM2 (issue 21 item 4's swap), plus a judge asking for a model the server
    does not serve: it fails all 4 of its items, so the swap exits 1 at --max-failure-rate 0.5 and a line
    names it - though pooled over the three judges at most 6 of 12 failed, within the budget. llama.cpp
    answers any model name, so there the third judge asks a closed port instead."""
    typo_url, reason = (
        ("http://127.0.0.1:9/v1", "Connection refused") if LLAMA_CPP else (smol.url, "Server is pinned to")
    )
    judge_env.setenv("LLAMAVID_JUDGE_PREFLIGHT", "0")  # else the preflight stops the wrong model at once
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps(SMOL_PROMPT))
    source = lmms_run(tmp_path / "run", [("", a, p) for _, a, p in SMOL_ITEMS[:4]])
    judges = f"exact,local:{smol.model}@{smol.url}#prompt={prompt},local:smollm2-typo@{typo_url}"
    rc = main(["swap", str(source), "--judges", judges, "--out", str(tmp_path / "r"), "--max-failure-rate", "0.5"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("error: judge local:smollm2-typo on msvd_qa: 4 of 4 judgements failed"), last
    assert reason in last  # the server's own reason
    report = json.loads((tmp_path / "r" / "swap_report.json").read_text())
    real = next(j for j in report["judges"] if "#prompt=" in j)
    assert report["failures"][real]["total"] == 4 and report["failures"]["local:smollm2-typo"]["failed"] == 4
    pair = next(p for p in report["pairs"] if (p["a"], p["b"]) == ("exact-match", real))
    assert pair["n"] + report["failures"][real]["failed"] == 4 and "kappa_ci" in pair  # every item accounted for
