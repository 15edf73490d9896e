"""The results package on REAL lmms-eval 0.7 output: simple_evaluate + EvaluationTracker, as the CLI saves.

A scripted model (answers chosen per doc) and two tiny local tasks (``ucf_crime`` with gold/pred
records, ``msvd_qa`` with judgement records from a deterministic fake judge picked by an environment
variable) are run several times: fps 1 and 6, a repeat of fps 1, and a re-judge with a second judge.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from lmms_eval.api.model import lmms  # noqa: E402
from lmms_eval.evaluator import simple_evaluate  # noqa: E402
from lmms_eval.loggers.evaluation_tracker import EvaluationTracker  # noqa: E402
from lmms_eval.tasks import TaskManager  # noqa: E402

from llamavid_eval.results import table  # noqa: E402
from llamavid_eval.results.__main__ import main  # noqa: E402
from llamavid_eval.results.load import load_runs  # noqa: E402

UCF_DOCS = [
    ("Abuse", "Abuse"),
    ("Arson", "Arson"),
    ("Normal", "Normal"),
    ("Normal", "Arson"),
    ("Shooting", "I cannot tell"),
    ("RoadAccidents", "RoadAccidents"),
]
QA_DOCS = [
    ("what is the man doing?", "cooking", "cooking"),
    ("what animal is shown?", "dog", "a dog"),
    ("who runs?", "girl", "boy"),
    ("what color?", "red", "red"),
]

UTILS = """
import os

CLASSES = ["Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
           "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism", "Normal"]


def doc_to_visual(doc):
    return []


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def ucf_process(doc, results):
    text = results[0].strip()
    return {"accuracy": {"gold": doc["answer"], "pred": text if text in CLASSES else "UNMAPPED"}}


def ucf_accuracy(items):
    return 100.0 * sum(r["gold"] == r["pred"] for r in items) / len(items)


def qa_process(doc, results):
    judge = os.environ["FAKE_JUDGE"]
    prediction = results[0].strip()
    record = {"question": doc["question"], "answer": doc["answer"], "prediction": prediction, "judge": judge}
    if judge == "fake:lenient" and doc["question"].startswith("who"):
        record.update(verdict=None, score=None, failed=True)
    else:
        ok = prediction == doc["answer"] if judge == "fake:strict" else doc["answer"] in prediction
        record.update(verdict=ok, score=5 if ok else 1, failed=False)
    return {"accuracy": record, "mean_score": record, "judge_failures": record}


def qa_accuracy(items):
    valid = [r for r in items if not r["failed"]]
    return 100.0 * sum(r["verdict"] for r in valid) / len(valid) if valid else None


def qa_score(items):
    valid = [r for r in items if not r["failed"]]
    return sum(r["score"] for r in valid) / len(valid) if valid else None


def qa_failures(items):
    return sum(r["failed"] for r in items)
"""


def _task_yaml(name: str, data: Path, process: str, metrics: list[tuple[str, str, bool]]) -> str:
    # score_key: lmms-eval 0.7.3 computes a CLT stderr from record["score"] (default key) and crashes on a
    # failed judgement's score None (evaluator_utils.calculate_clt_aggregate_metric); point it elsewhere.
    metric_yaml = "".join(
        f"  - metric: {m}\n    aggregation: !function utils.{agg}\n    higher_is_better: {str(hib).lower()}\n"
        for m, agg, hib in metrics
    )
    return (
        textwrap.dedent(
            f"""\
        task: {name}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_target: answer
        generation_kwargs:
          max_new_tokens: 16
        process_results: !function utils.{process}
        score_key: clt_score_not_logged
        metric_list:
        """
        )
        + metric_yaml
    )


class Scripted(lmms):
    """Returns a chosen answer per (task, doc_id): the smallest model lmms-eval will run."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        super().__init__()
        self.answers = answers

    def generate_until(self, requests: list) -> list[str]:
        return [self.answers[r.task_name][r.doc_id] for r in requests]

    def loglikelihood(self, requests: list) -> list:
        raise NotImplementedError

    def generate_until_multi_round(self, requests: list) -> list[str]:
        raise NotImplementedError


def _run(
    out: Path, tasks_dir: Path, tasks: list[str], answers: dict[str, list[str]], model_args: str, stamp: str
) -> None:
    """What ``lmms-eval --output_path out --log_samples`` does after evaluation (lmms_eval/__main__.py)."""
    tracker = EvaluationTracker(output_path=str(out))
    results = simple_evaluate(
        model=Scripted(answers),
        model_args=model_args,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        evaluation_tracker=tracker,
        log_samples=True,
        bootstrap_iters=0,
        datetime_str=stamp,
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples, datetime_str=stamp)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])


@pytest.fixture(scope="module")
def lmms_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lmms")
    tasks_dir = root / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "utils.py").write_text(UTILS)
    ucf_data, qa_data = tasks_dir / "ucf.jsonl", tasks_dir / "qa.jsonl"
    ucf_data.write_text(
        "".join(json.dumps({"question": "Which class?", "answer": gold}) + "\n" for gold, _ in UCF_DOCS)
    )
    qa_data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a, _ in QA_DOCS))
    (tasks_dir / "ucf_crime.yaml").write_text(
        _task_yaml("ucf_crime", ucf_data, "ucf_process", [("accuracy", "ucf_accuracy", True)])
    )
    qa_metrics = [
        ("accuracy", "qa_accuracy", True),
        ("mean_score", "qa_score", True),
        ("judge_failures", "qa_failures", False),
    ]
    (tasks_dir / "msvd_qa.yaml").write_text(_task_yaml("msvd_qa", qa_data, "qa_process", qa_metrics))
    answers = {"ucf_crime": [p for _, p in UCF_DOCS], "msvd_qa": [p for _, _, p in QA_DOCS]}
    better = {"ucf_crime": [g for g, _ in UCF_DOCS], "msvd_qa": answers["msvd_qa"]}
    out = root / "outputs"
    ckpt = "pretrained=YanweiLi/llama-vid-7b-full-224-video-fps-1,max_frames=300"
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("FAKE_JUDGE", "fake:strict")
        _run(out, tasks_dir, ["ucf_crime", "msvd_qa"], answers, f"{ckpt},fps=1", "20250101_100000")
        _run(out, tasks_dir, ["ucf_crime"], better, f"{ckpt},fps=1", "20250102_100000")  # repeat: newer ucf only
        _run(out, tasks_dir, ["ucf_crime", "msvd_qa"], answers, f"{ckpt},fps=6", "20250103_100000")
        mp.setenv("FAKE_JUDGE", "fake:lenient")
        _run(out, tasks_dir, ["msvd_qa"], answers, f"{ckpt},fps=1", "20250104_100000")  # same predictions, other judge
    finally:
        mp.undo()
    return out


def test_layout_is_what_lmms_eval_writes(lmms_output: Path) -> None:
    folder = lmms_output / "YanweiLi__llama-vid-7b-full-224-video-fps-1"
    names = sorted(p.name for p in folder.iterdir())
    assert "20250101_100000_results.json" in names
    assert "20250101_100000_samples_ucf_crime.jsonl" in names
    data = json.loads((folder / "20250101_100000_results.json").read_text())
    assert "accuracy,none" in data["results"]["ucf_crime"]
    assert "accuracy_stderr,none" in data["results"]["ucf_crime"]


def test_runs_parse(lmms_output: Path) -> None:
    runs, problems = load_runs([lmms_output], max_failure_rate=0.5)  # the lenient judge fails 1 of 4 on purpose
    assert problems == []
    assert len(runs) == 4
    first = next(r for r in runs if r.date == "2025-01-01 02:00:00")  # stamp 10:00 UTC+8
    assert first.checkpoint == "llama-vid-7b-full-224-video-fps-1"
    assert (first.fps, first.max_frames, first.judge) == (1.0, 300, "fake:strict")
    assert first.metrics["ucf_crime"]["accuracy"] == pytest.approx(400 / 6)
    assert first.metrics["msvd_qa"] == {"accuracy": 50.0, "mean_score": 3.0, "judge_failures": 0.0,
                                        "accuracy_all": 50.0, "mean_score_all": 3.0, "judged_items": 4.0}  # fmt: skip
    assert first.n_samples["ucf_crime"] == (6, 6)
    lenient = next(r for r in runs if r.judge == "fake:lenient")
    assert lenient.metrics["msvd_qa"]["judge_failures"] == 1.0
    assert lenient.metrics["msvd_qa"]["accuracy"] == pytest.approx(100.0)
    assert lenient.metrics["msvd_qa"]["accuracy_all"] == pytest.approx(75.0)  # the failure counted as wrong
    (default,) = [r for r in load_runs([lmms_output])[0] if r.judge == "fake:lenient"]  # budget 5%: withheld
    assert (
        default.metrics["msvd_qa"]["accuracy"] is None and default.withheld["msvd_qa"] == "judge failed on 1 of 4 items"
    )


def test_latest_merges_per_task_and_all_keeps_every_run(lmms_output: Path) -> None:
    runs, _ = load_runs([lmms_output])
    latest = table.build(runs, [], latest=True)
    strict_fps1 = latest.frame[(latest.frame["fps"] == "1") & (latest.frame["judge"] == "fake:strict")]
    assert len(strict_fps1) == 1
    row = strict_fps1.iloc[0]
    assert row["ucf_crime/accuracy"] == 100.0  # the newer repeat wins for ucf_crime ...
    assert row["msvd_qa/accuracy"] == 50.0  # ... while msvd_qa still comes from the older run
    assert len(table.build(runs, [], latest=False).frame) == 4


def test_cli_end_to_end(
    lmms_output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMAVID_JUDGE_MAX_FAILURE_RATE", "0.5")  # the lenient judge fails 1 of 4 on purpose
    out = tmp_path / "board"
    # the lenient judge failed 1 of the 12 judged items shown: refused by default, accepted with a failure rate
    assert main(["table", str(lmms_output), "--out", str(out), "--sort", "msvd_qa/accuracy", "--no-plots"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: 1 of 12 judgements failed")
    assert (
        main(["table", str(lmms_output), "--out", str(out), "--sort", "msvd_qa/accuracy", "--max-failure-rate", "0.1"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| 50.0 ± " in printed and "Interval method: bootstrap" in printed  # headline view: value ± half-width
    assert "msvd_qa/judge_failures" not in printed and "msvd_qa/mean_score" not in printed
    assert "| kind | model | checkpoint |" in printed
    assert "| reported |" in printed and "59.17" in printed  # the study's Llama-3-judged MSVD-QA row
    assert printed.count("| measured |") == 3
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html"):
        assert (out / name).stat().st_size > 200
    plots = {p.name for p in (out / "plots").iterdir()}
    for stem in ("ucf_per_class_accuracy", "accuracy_vs_fps", "judge_agreement_0_msvd_qa"):
        assert {f"{stem}.png", f"{stem}.svg"} <= plots
    assert sum(name.startswith("ucf_confusion_") and name.endswith(".png") for name in plots) == 2
    markdown = (out / "leaderboard.md").read_text()
    assert "fake:lenient" in markdown and "fake:strict" in markdown and "## Judge comparison" in markdown
    items = (out / "judge_items_0_msvd_qa.csv").read_text()
    assert "girl" in items and "failed" in items
    html = (out / "leaderboard.html").read_text()
    assert (
        "data:image/png;base64," in html
        and "<script>" in html
        and "http://" not in html.replace("http://www.w3.org", "")
    )
