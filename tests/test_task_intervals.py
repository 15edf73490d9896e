"""Intervals in lmms-eval's own output: the stderr columns and the ``<metric>_ci_low/_ci_high/_n`` rows
of our tasks agree with ``llamavid_eval.core.stats`` on the same records, clustered by video, judge
failures left out; lmms-eval's printed table shows them (not N/A)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llamavid_eval.judges.testing import Call, FakeChatServer, Response, reply
from llamavid_eval.tasks.common import intervals
from llamavid_eval.tasks.prepare import main as prepare
from lmms_eval.utils import make_table
from test_tasks_support import FAIL, ScriptedModel, evaluate, judge_server, metric, tiny_video, video_qa_raw

from llamavid_eval.core import stats

ANSWERS = {"0": "dancing", "1": "a woman", "2": "blue", "3": FAIL}  # yes/5, yes/4, no/1, failure
VIDEOS = {"0": "vid1", "1": "vid1", "2": "vid2", "3": "vid2"}


def test_metric_records_are_one_copy_per_metric_naming_the_video():
    record = {"id": 1, "prediction": "x"}
    copies = intervals.metric_records(record, "videos/a.mp4", ["accuracy", "accuracy_ci_low"])
    assert copies["accuracy"] == {"id": 1, "prediction": "x", "video": "videos/a.mp4"}
    assert copies["accuracy"] is not copies["accuracy_ci_low"] and "video" not in record


def test_mark_mean_writes_values_and_leaves_out_missing():
    records = [{"id": 0, "item_value": 7.0}, {"id": 1}, {"id": 2}]
    assert intervals.mark_mean(records, [None, 100.0, 0.0]) == pytest.approx(50.0)
    assert [r.get("item_value") for r in records] == [None, 100.0, 0.0]  # a stale value is removed
    assert math.isnan(intervals.mark_mean(records, [None, None, None]))


def test_ci_aggregations_are_core_stats_on_the_same_values():
    rng = np.random.default_rng(5)
    records = [{"id": i, "video": f"v{i // 4}", "ok": bool(rng.random() < 0.6)} for i in range(80)]

    def values(recs, task_config):
        return [None if r["id"] % 10 == 0 else 100.0 * r["ok"] for r in recs]

    aggregations = intervals.ci_aggregations("accuracy", values)
    assert sorted(aggregations) == ["accuracy_ci_high", "accuracy_ci_low", "accuracy_n"]
    expected = stats.cluster_bootstrap_mean(
        [math.nan if v is None else v for v in values(records, None)], [r["video"] for r in records]
    )
    assert aggregations["accuracy_ci_low"](records) == expected.low
    assert aggregations["accuracy_ci_high"](records) == expected.high
    assert aggregations["accuracy_n"](records) == expected.n == 72 and expected.clusters == 20
    assert expected.method == "cluster bootstrap (percentile) over videos, 2000 resamples, seed 0"


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
    # per-item values and videos in the logged records; the failed judgement has no value
    assert {i: s["accuracy"]["video"].rsplit("/", 1)[-1].split(".")[0] for i, s in samples.items()} == VIDEOS
    values = {metric: [samples[i][metric].get("item_value") for i in "0123"] for metric in ("accuracy", "mean_score")}
    assert values == {"accuracy": [100.0, 100.0, 0.0, None], "mean_score": [5.0, 4.0, 1.0, None]}

    accuracy_values, scores = [100.0, 100.0, 0.0], [5.0, 4.0, 1.0]
    assert task["accuracy_stderr_clt,none"] == pytest.approx(np.std(accuracy_values, ddof=1) / math.sqrt(3))
    assert task["mean_score_stderr_clt,none"] == pytest.approx(np.std(scores, ddof=1) / math.sqrt(3))
    assert isinstance(task["accuracy_stderr_clustered,none"], float)  # 2 videos: clustered by video

    expected = stats.cluster_bootstrap_mean(accuracy_values, ["vid1", "vid1", "vid2"])
    assert (metric(results, "msvd_qa", "accuracy_ci_low"), metric(results, "msvd_qa", "accuracy_ci_high")) == (
        pytest.approx(expected.low),
        pytest.approx(expected.high),
    )
    assert metric(results, "msvd_qa", "accuracy_n") == 3 and metric(results, "msvd_qa", "mean_score_n") == 3
    assert expected.estimate == pytest.approx(metric(results, "msvd_qa", "accuracy"))
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
    per_metric = {name: [out[name] for out in outputs] for name in outputs[0]}
    correct = [100.0, 100.0, 0.0, 100.0, 100.0, 0.0, 100.0, 0.0, 0.0, 100.0, 100.0, 100.0]  # "red or blue" hedges
    assert demo.accuracy(per_metric["accuracy"]) == pytest.approx(np.mean(correct))
    assert [r["item_value"] for r in per_metric["accuracy"]] == correct
    assert demo.accuracy_colour(per_metric["accuracy_colour"]) == pytest.approx(np.mean(correct[0::2]))
    assert [r.get("item_value") for r in per_metric["accuracy_colour"]][:2] == [100.0, None]  # order item left out
    expected = stats.cluster_bootstrap_mean(correct, [doc["video"] for doc in docs])
    assert expected.clusters == 6 and expected.n == 12
    assert demo.accuracy_ci_low(per_metric["accuracy_ci_low"]) == expected.low
    assert demo.accuracy_ci_high(per_metric["accuracy_ci_high"]) == expected.high
    assert demo.accuracy_n(per_metric["accuracy_n"]) == 12


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
               "LLAMAVID_JUDGE_BASE_URL": server.url, "LLAMAVID_JUDGE_CACHE": "off"}  # fmt: skip
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
