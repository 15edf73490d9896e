"""ucf_crime (multiple choice -> class mapping, all metrics, confusion matrix) and ucf_crime_judged
(the study's 11-category protocol through the real judge layer), checked against hand-computed values."""

from __future__ import annotations

import argparse
import csv
import json
import math
from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from test_tasks_support import FAIL, ScriptedModel, evaluate, judge_server, metric, ucf_raw

from llamavid_eval.core import stats
from llamavid_eval.core.ucf import CLASSES, UNMAPPED, class_from_filename
from llamavid_eval.tasks.prepare import main
from llamavid_eval.tasks.ucf_crime import confusion
from llamavid_eval.tasks.ucf_crime.labels import JUDGED_NAMES, JUDGED_PROMPT, MC_PROMPT, map_answer
from llamavid_eval.tasks.ucf_crime.utils import score

# video -> (scripted answer, class it maps to)
MC = {
    "Abuse028_x264": ("A", "Abuse"),
    "Abuse030_x264": ("Fighting", "Fighting"),
    "Arrest001_x264": ("I don't know", UNMAPPED),
    "RoadAccidents001_x264": ("H) Road Accidents", "RoadAccidents"),
    "Shoplifting005_x264": ("stealing", "Stealing"),
    "Stealing019_x264": ("(N)", "Normal"),
    "Normal_Videos_003_x264": ("Normal", "Normal"),
    "Normal_Videos_006_x264": ("robbery", "Robbery"),
}


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    raw = ucf_raw(tmp_path / "raw")
    test_list = raw / "Anomaly_Detection_splits" / "Anomaly_Test.txt"
    assert (
        main(
            [
                "ucf_crime",
                "--videos",
                str(raw / "Videos"),
                "--test-list",
                str(test_list),
                "--root",
                str(tmp_path / "root"),
            ]
        )
        == 0
    )
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(tmp_path / "root"))
    return tmp_path / "root"


@pytest.mark.parametrize(
    ("text", "cls"),
    [("B", "Arrest"), ("b.", "Arrest"), ("(C)", "Arson"), ("Answer: D", "Assault"), ("The answer is E.", "Burglary"),
     ("N. Normal", "Normal"), ("A man is fighting", "Fighting"), ("ROAD_ACCIDENT", "RoadAccidents"),
     ("Shop lifting", "Shoplifting"), ("Normal Videos", "Normal"), ("robbery and shooting", UNMAPPED),
     ("", UNMAPPED), ("Z", UNMAPPED), ("I think so", UNMAPPED)],
)  # fmt: skip
def test_answer_mapping(text, cls):
    assert map_answer(text) == cls


def test_class_from_filename():
    names = [
        "Abuse028_x264.mp4",
        "RoadAccidents001_x264.mp4",
        "Normal_Videos_003_x264.mp4",
        "Normal_Videos001_x264.mp4",
        "Parade001_x264.mp4",
    ]
    assert [class_from_filename(n) for n in names] == ["Abuse", "RoadAccidents", "Normal", "Normal", None]


def test_metrics_and_confusion_matrix(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAVID_CONFUSION_DIR", str(tmp_path / "cm"))
    model = ScriptedModel(lambda doc: MC[doc["id"]][0])
    results = evaluate(["ucf_crime"], model)
    assert set(model.prompts) == {MC_PROMPT}
    expected = {
        "accuracy": 100 * 3 / 8,  # Abuse028, RoadAccidents001, Normal003
        "macro_accuracy": (50 + 0 + 100 + 0 + 0 + 50) / 6,  # over the 6 classes present
        "binary_accuracy": 100 * 5 / 8,  # wrong side: Arrest (unmapped), Stealing->Normal, Normal->Robbery
        "unmapped": 1,
        "acc_abuse": 50.0, "acc_arrest": 0.0, "acc_roadaccidents": 100.0, "acc_shoplifting": 0.0,
        "acc_stealing": 0.0, "acc_normal": 50.0,
    }  # fmt: skip
    for name, value in expected.items():
        assert metric(results, "ucf_crime", name) == pytest.approx(value), name
    assert math.isnan(metric(results, "ucf_crime", "acc_arson"))  # no Arson video in the split
    samples = results["samples"]["ucf_crime"]
    assert [(s["accuracy"]["gold"], s["accuracy"]["pred"]) for s in samples][1] == ("Abuse", "Fighting")
    _check_intervals(results, samples)

    written = sorted((tmp_path / "cm").glob("ucf_crime_confusion_*"))
    assert [p.suffix for p in written] == [".csv", ".json"]
    rows = list(csv.reader(written[0].open()))
    assert rows[0] == ["gold\\pred", *CLASSES, UNMAPPED]
    cells = {(r[0], col): int(v) for r in rows[1:] for col, v in zip(rows[0][1:], r[1:], strict=True) if v != "0"}
    assert cells == {("Abuse", "Abuse"): 1, ("Abuse", "Fighting"): 1, ("Arrest", UNMAPPED): 1, ("RoadAccidents", "RoadAccidents"): 1,
                     ("Shoplifting", "Stealing"): 1, ("Stealing", "Normal"): 1, ("Normal", "Normal"): 1, ("Normal", "Robbery"): 1}  # fmt: skip
    payload = json.loads(written[1].read_text())
    assert payload["n"] == 8 and payload["rows"] == list(CLASSES) and sum(map(sum, payload["matrix"])) == 8


def _check_intervals(results, samples) -> None:
    """Stderr columns and interval rows of ucf_crime against numpy / core.stats on the logged records."""
    correct = [100.0 * (s["accuracy"]["gold"] == s["accuracy"]["pred"]) for s in samples]
    videos = [s["accuracy"]["video"] for s in samples]
    assert len(set(videos)) == 8 and [s["accuracy"]["item_value"] for s in samples] == correct
    assert metric(results, "ucf_crime", "accuracy_stderr_clt") == pytest.approx(np.std(correct, ddof=1) / math.sqrt(8))
    # one question per video: clustering changes nothing
    assert metric(results, "ucf_crime", "accuracy_stderr_clustered") == pytest.approx(
        metric(results, "ucf_crime", "accuracy_stderr_clt")
    )
    assert metric(results, "ucf_crime", "acc_abuse_stderr_clt") == "N/A"  # the record is logged once, under accuracy
    binary = [100.0, 100.0, 0.0, 100.0, 100.0, 0.0, 100.0, 0.0]  # file order: Arrest, Stealing, Normal006 wrong
    assert all(s["binary_accuracy"] is None for s in samples)
    for name, values in (("accuracy", correct), ("binary_accuracy", binary)):
        expected = stats.cluster_bootstrap_mean(values, videos)
        got = [metric(results, "ucf_crime", f"{name}_{part}") for part in ("ci_low", "ci_high", "n")]
        assert got == [pytest.approx(expected.low), pytest.approx(expected.high), 8], name
        assert expected.low < metric(results, "ucf_crime", name) < expected.high


def test_confusion_goes_beside_output_path_or_nowhere(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMAVID_CONFUSION_DIR", raising=False)
    records = [{"gold": "Abuse", "pred": "Abuse"}, {"gold": "Normal", "pred": UNMAPPED}]
    args = argparse.Namespace(output_path=str(tmp_path / "out"), model="llamavid", model_args="pretrained=x,fps=6")
    task = SimpleNamespace(config=SimpleNamespace(task="ucf_crime"), values=None)
    records = [{**r, "video": f"v{i}"} for i, r in enumerate(records)]
    assert score(records, task, args=args) == 50.0 == task.values["accuracy"]
    assert task.values["acc_normal"] == 0.0 and task.values["unmapped"] == 1 and math.isnan(task.values["acc_arson"])
    written = next((tmp_path / "out").glob("ucf_crime_confusion_*.json"))
    payload = json.loads(written.read_text())
    assert payload["model_args"] == "pretrained=x,fps=6"
    created = datetime.fromisoformat(payload["created"])
    assert created.utcoffset() == timedelta(0)  # dates we write are UTC, the file name's stamp too
    assert written.stem.endswith("Z") and created.strftime("%Y%m%dT%H%M%S") in written.stem
    assert confusion.write(records, "ucf_crime", None) is None


def test_confusion_cli_rebuilds_from_samples(tmp_path):
    samples = tmp_path / "samples_ucf_crime.jsonl"
    samples.write_text(
        "".join(
            json.dumps({"accuracy": {"gold": g, "pred": p}}) + "\n" for g, p in [("Arson", "Arson"), ("Arson", "Abuse")]
        )
    )
    matrix = confusion.confusion_matrix(confusion.records_from_samples(samples))
    assert matrix[CLASSES.index("Arson")][CLASSES.index("Arson")] == 1 and matrix[CLASSES.index("Arson")][0] == 1


# video -> scripted free-text answer; reference = label name ("Road Accident", "Normal Video")
JUDGED = {
    "Abuse028_x264": "abuse",  # equal -> yes/5
    "Abuse030_x264": "fighting",  # no/1
    "Arrest001_x264": "An arrest.",  # contains -> yes/4
    "RoadAccidents001_x264": "Road Accident",  # yes/5
    "Normal_Videos_003_x264": FAIL,  # judge failure
    "Normal_Videos_006_x264": "robbery",  # no/1
}


def test_judged_protocol_excludes_three_classes(prepared, monkeypatch):
    model = ScriptedModel(lambda doc: JUDGED[doc["id"]])
    with judge_server(monkeypatch) as received:
        results = evaluate(["ucf_crime_judged"], model)
    assert metric(results, "ucf_crime_judged", "excluded_videos") == 2  # Shoplifting005, Stealing019
    assert metric(results, "ucf_crime_judged", "accuracy") == pytest.approx(100 * 3 / 5)
    assert metric(results, "ucf_crime_judged", "mean_score") == pytest.approx((5 + 1 + 4 + 5 + 1) / 5)
    assert metric(results, "ucf_crime_judged", "judge_failures") == 1
    assert set(model.prompts) == {JUDGED_PROMPT} and len(received) == 6
    assert metric(results, "ucf_crime_judged", "accuracy_all") == pytest.approx(100 * 3 / 6)  # the failure as wrong
    assert metric(results, "ucf_crime_judged", "judged_items") == 6
    # intervals rest on the 5 judged videos: the failure is left out of n
    samples = results["samples"]["ucf_crime_judged"]
    values = [s["accuracy"].get("item_value", math.nan) for s in samples]
    assert values[4] is math.nan and [v for v in values if v == v] == [100.0, 0.0, 100.0, 100.0, 0.0]
    expected = stats.cluster_bootstrap_mean(values, [s["accuracy"]["video"] for s in samples])
    assert metric(results, "ucf_crime_judged", "accuracy_n") == 5 == metric(results, "ucf_crime_judged", "mean_score_n")
    assert metric(results, "ucf_crime_judged", "accuracy_ci_low") == pytest.approx(expected.low)
    assert metric(results, "ucf_crime_judged", "accuracy_ci_high") == pytest.approx(expected.high)
    answers = [s["accuracy"]["answer"] for s in results["samples"]["ucf_crime_judged"]]
    assert answers == ["Abuse", "Abuse", "Arrest", "Road Accident", "Normal Video", "Normal Video"]


def test_judged_prompt_offers_exactly_the_judged_classes():
    offered = JUDGED_PROMPT.split(": ", 1)[1].split("?")[0].split(", ")
    assert sorted(offered) == sorted(JUDGED_NAMES.values()) and len(offered) == 11
