"""Numbers in lmms-eval's own output: the judged metrics both ways (VALID, ALL), the stderr columns and the
``<metric>_ci_low/_ci_high/_n`` rows of our tasks agree with ``llamavid_eval.core.stats`` on the same records,
clustered by video; lmms-eval's printed table shows them (not N/A); above the judge failure budget the
headline metrics are NaN and the log says why."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from llamavid_eval.judges.testing import Call, FakeChatServer, Response, reply
from llamavid_eval.tasks.prepare import main as prepare
from lmms_eval.utils import make_table
from test_tasks_support import FAIL, ScriptedModel, evaluate, judge_server, metric, tiny_video, video_qa_raw

from llamavid_eval.core import scores, stats

ANSWERS = {"0": "dancing", "1": "a woman", "2": "blue", "3": FAIL}  # yes/5, yes/4, no/1, failure
VIDEOS = {"0": "vid1", "1": "vid1", "2": "vid2", "3": "vid2"}


def test_judged_scores_are_core_stats_both_ways_on_the_same_verdicts():
    rng = np.random.default_rng(5)
    verdicts = [
        scores.Verdict(f"v{i // 4}", None, None, "prose") if i % 10 == 0 else
        scores.Verdict(f"v{i // 4}", bool(ok := rng.random() < 0.6), 4.0 if ok else 1.0)
        for i in range(80)
    ]  # fmt: skip
    result = scores.judged_scores(verdicts, max_failure_rate=0.2)
    values = result.values()
    valid = [math.nan if v.failed else 100.0 * v.verdict for v in verdicts]
    expected = stats.cluster_bootstrap_mean(valid, [v.cluster for v in verdicts], bounds=stats.PERCENT)
    assert (values["accuracy"], values["accuracy_ci_low"], values["accuracy_ci_high"]) == (
        expected.estimate, expected.low, expected.high)  # fmt: skip
    assert values["accuracy_n"] == 72 and expected.clusters == 20 and values["judge_failures"] == 8
    everything = [0.0 if v.failed else 100.0 * v.verdict for v in verdicts]
    assert values["accuracy_all"] == pytest.approx(np.mean(everything)) and values["accuracy_all_n"] == 80
    assert values["mean_score_all"] == pytest.approx(np.mean([0.0 if v.failed else v.score for v in verdicts]))
    assert values["accuracy_all"] < values["accuracy"] and set(values) == set(scores.METRICS)
    assert result.budget_error("t") is None  # 10% <= 20%
    withheld = scores.judged_scores(verdicts, max_failure_rate=0.05)
    assert all(math.isnan(withheld.values()[m]) for m in scores.HEADLINE)
    assert withheld.values()["judge_failures"] == 8 and withheld.values()["judged_items"] == 80
    assert "[t] judge failed on 8 of 80 items (10.0% > LLAMAVID_JUDGE_MAX_FAILURE_RATE=0.05)" in withheld.budget_error(
        "t"
    )
    assert "prose" in withheld.budget_error("t") and "llamavid judge rejudge" in withheld.budget_error("t")


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    qa, videos = video_qa_raw(tmp_path / "raw")
    assert prepare(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(tmp_path / "root")]) == 0
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(tmp_path / "root"))
    return tmp_path / "root"


def _table_row(table: str, metric_name: str) -> list[str]:
    """The cells of the printed table's row for ``metric_name`` (header first)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[header.index("Metric")] == metric_name:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"no row for {metric_name} in\n{table}")


def test_judged_task_reports_stderr_and_interval_in_lmms_eval_output(prepared, monkeypatch):
    with judge_server(monkeypatch):
        results = evaluate(["msvd_qa"], ScriptedModel(lambda doc: ANSWERS[doc["id"]]))
    task = results["results"]["msvd_qa"]
    samples = {s["doc"]["id"]: s for s in results["samples"]["msvd_qa"]}
    # the record is logged once (under accuracy) with its video, judgement and value; the failure has no value
    assert {i: s["accuracy"]["video"].rsplit("/", 1)[-1].split(".")[0] for i, s in samples.items()} == VIDEOS
    assert [samples[i]["accuracy"].get("item_value") for i in "0123"] == [100.0, 100.0, 0.0, None]
    assert [samples[i]["accuracy"]["judgement"]["score"] for i in "0123"] == [5, 4, 1, None]
    assert all(samples[i][m] is None for i in "0123" for m in scores.METRICS[1:])

    accuracy_values = [100.0, 100.0, 0.0]
    assert task["accuracy_stderr_clt,none"] == pytest.approx(np.std(accuracy_values, ddof=1) / math.sqrt(3))
    assert isinstance(task["accuracy_stderr_clustered,none"], float)  # 2 videos: clustered by video

    expected = stats.cluster_bootstrap_mean(accuracy_values, ["vid1", "vid1", "vid2"])
    assert (metric(results, "msvd_qa", "accuracy_ci_low"), metric(results, "msvd_qa", "accuracy_ci_high")) == (
        pytest.approx(expected.low),
        pytest.approx(expected.high),
    )
    assert metric(results, "msvd_qa", "accuracy_n") == 3 and metric(results, "msvd_qa", "mean_score_n") == 3
    assert expected.estimate == pytest.approx(metric(results, "msvd_qa", "accuracy"))
    assert metric(results, "msvd_qa", "accuracy_all") == pytest.approx(50.0)  # the failure counted as wrong
    assert metric(results, "msvd_qa", "mean_score_all") == pytest.approx(10 / 4)
    assert (metric(results, "msvd_qa", "accuracy_all_n"), metric(results, "msvd_qa", "judged_items")) == (4, 4)
    # interval rows carry no per-item value of their own (no stderr of a bound)
    assert task["accuracy_ci_low_stderr_clt,none"] == "N/A"

    table = make_table(results)
    row = _table_row(table, "accuracy")
    assert row["Stderr_CLT"] == f"{task['accuracy_stderr_clt,none']:.4f}", table
    assert row["Stderr_Clustered"] not in ("", "N/A"), table
    assert _table_row(table, "accuracy_ci_low")["Value"] == f"{expected.low:.4f}"


def test_demo_accuracy_values_per_type_and_interval():
    from llamavid_eval.tasks.llamavid_demo import utils as demo

    colours = ["red", "green", "blue", "yellow"]
    docs = [
        {"id": f"v{v}_{qtype}", "video": f"llamavid_demo/videos/v{v}.mp4", "question": "q", "answer": answer,
         "question_type": qtype, "choices": colours}
        for v in range(6) for qtype, answer in (("colour", "red"), ("order", "blue"))
    ]  # fmt: skip
    predictions = [
        "red",
        "blue",
        "green",
        "blue",
        "red",
        "red or blue",
        "red",
        "green",
        "yellow",
        "blue",
        "red",
        "blue",
    ]
    outputs = [demo.process_results(doc, [p]) for doc, p in zip(docs, predictions, strict=True)]
    assert all(out["accuracy_colour"] is None for out in outputs)  # the record is logged once, under accuracy
    records = [out["accuracy"] for out in outputs]
    task = SimpleNamespace(values=None)
    correct = [100.0, 100.0, 0.0, 100.0, 100.0, 0.0, 100.0, 0.0, 0.0, 100.0, 100.0, 100.0]  # "red or blue" hedges
    assert demo.score(records, task) == pytest.approx(np.mean(correct))
    assert [r["item_value"] for r in records] == correct
    assert task.values["accuracy_colour"] == pytest.approx(np.mean(correct[0::2]))
    assert task.values["accuracy_order"] == pytest.approx(np.mean(correct[1::2]))
    expected = stats.cluster_bootstrap_mean(correct, [doc["video"] for doc in docs])
    assert expected.clusters == 6 and expected.n == 12
    assert (task.values["accuracy_ci_low"], task.values["accuracy_ci_high"]) == (expected.low, expected.high)
    assert task.values["accuracy_n"] == 12


def _alternating_judge(call: Call) -> Response:
    """A deterministic judge for the CLI run: yes/4 for even-numbered reference answers, no/1 otherwise."""
    numbers = re.findall(r"^Correct Answer: answer (\d+)$", call.user_text, re.MULTILINE)
    even = not numbers or int(numbers[-1]) % 2 == 0  # not one of ours (a judge preflight probe): yes
    return reply("{'pred': 'yes', 'score': 4}" if even else "{'pred': 'no', 'score': 1}")


@pytest.mark.slow
def test_lmms_eval_cli_prints_and_writes_intervals_for_a_judged_task(tiny_release, tmp_path, monkeypatch):
    """``lmms-eval --model llamavid --tasks msvd_qa`` from the command line: the printed table and
    results.json carry the stderr columns and the interval rows of the judged accuracy."""
    qa = [
        {"video_id": f"vid{i // 3}", "question": f"what happens in part {i}?", "id": i, "answer": f"answer {i}"}
        for i in range(9)
    ]
    raw = tmp_path / "raw"
    for name in sorted({row["video_id"] for row in qa}):
        tiny_video(raw / "videos" / f"{name}.mp4")
    (raw / "test_qa.json").write_text(json.dumps(qa))
    assert prepare(["msvd_qa", "--qa", str(raw / "test_qa.json"), "--videos", str(raw / "videos"),
                    "--root", str(tmp_path / "root")]) == 0  # fmt: skip
    out = tmp_path / "out"
    args = f"pretrained={tiny_release.checkpoint},qformer_tokenizer={tiny_release.bert_tokenizer},dtype=fp32,fps=1"
    command = [str(Path(sys.executable).parent / "lmms-eval"), "--model", "llamavid", "--model_args", args,
               "--tasks", "msvd_qa", "--batch_size", "4", "--output_path", str(out), "--log_samples"]  # fmt: skip
    with FakeChatServer(_alternating_judge) as server:
        env = {**os.environ, "LLAMAVID_DATA_ROOT": str(tmp_path / "root"), "LLAMAVID_JUDGE": "local",
               "LLAMAVID_JUDGE_BASE_URL": server.url, "LLAMAVID_JUDGE_CACHE": "off",
               "LLAMAVID_JUDGE_EXAM": "0"}  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    payload = json.loads(next(out.rglob("*_results.json")).read_text())["results"]["msvd_qa"]
    values = [100.0 * (i % 2 == 0) for i in range(9)]
    expected = stats.cluster_bootstrap_mean(values, [f"vid{i // 3}" for i in range(9)])
    assert payload["accuracy,none"] == pytest.approx(expected.estimate)
    assert payload["accuracy_ci_low,none"] == pytest.approx(expected.low)
    assert payload["accuracy_ci_high,none"] == pytest.approx(expected.high)
    assert payload["accuracy_n,none"] == 9
    assert payload["accuracy_stderr_clt,none"] == pytest.approx(np.std(values, ddof=1) / 3)
    assert isinstance(payload["accuracy_stderr_clustered,none"], float)
    row = _table_row(run.stdout, "accuracy")
    assert row["Stderr_CLT"] == f"{payload['accuracy_stderr_clt,none']:.4f}"
    assert row["Stderr_Clustered"] == f"{payload['accuracy_stderr_clustered,none']:.4f}"
    assert _table_row(run.stdout, "accuracy_ci_high")["Value"] == f"{expected.high:.4f}"
