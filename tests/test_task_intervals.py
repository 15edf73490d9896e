"""Intervals in lmms-eval's own output: the stderr columns and the ``<metric>_ci_low/_ci_high/_n`` rows
of our tasks agree with ``llamavid_eval.core.stats`` on the same records, clustered by video, judge
failures left out; lmms-eval's printed table shows them (not N/A)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from llamavid_eval.tasks.common import intervals
from llamavid_eval.tasks.prepare import main as prepare
from lmms_eval.utils import make_table
from test_tasks_support import FAIL, ScriptedModel, evaluate, judge_server, metric, video_qa_raw

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
