"""``llamavid results compare``: paired difference and McNemar on hand-made tables, and two real lmms-eval runs
of ``msvd_qa`` (judged on the loopback server) with an item only one run has and a judge failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamavid_eval.core import stats
from llamavid_eval.core.stats import Interval
from llamavid_eval.results import compare
from llamavid_eval.results.__main__ import main
from llamavid_eval.results.compare import compare_runs, verdict


def write_samples(path: Path, correct: list[bool | None], videos: bool = True, answers: str = "a") -> Path:
    """A samples file of a judged task: None = the judge failed on that item."""
    lines = []
    for i, ok in enumerate(correct):
        judgement = {
            "backend": "exact",
            "model": "",
            "verdict": ok,
            "score": None if ok is None else 5 * ok,
            "failed": ok is None,
        }
        record = {
            "id": i,
            "question": f"q{i}",
            "answer": answers,
            "prediction": "p",
            "judgement": judgement,
            **({"video": f"v{i // 2}"} if videos else {}),
        }
        lines.append({"doc_id": i, "accuracy": record, "mean_score": record})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_paired_difference_and_mcnemar_on_a_hand_made_table(tmp_path: Path) -> None:
    # 2x2 over 12 items: both right 5, only A 1, only B 4, both wrong 2 -> B - A = (4 - 1) / 12 = +25 points;
    # exact McNemar on 1 vs 4 discordant: p = 2 * P(X <= 1 | n=5, 1/2) = 2 * 6/32 = 0.375
    a = [True] * 5 + [True] + [False] * 4 + [False] * 2
    b = [True] * 5 + [False] + [True] * 4 + [False] * 2
    fa = write_samples(tmp_path / "a" / "20250101_000000_samples_msvd_qa.jsonl", a)
    fb = write_samples(tmp_path / "b" / "20250102_000000_samples_msvd_qa.jsonl", b)
    r = compare_runs(fa, fb)
    assert (r["task"], r["metric"], r["matched"], r["paired"]) == ("msvd_qa", "accuracy", 12, 12)
    assert r["mcnemar"] == {"only_a": 1, "only_b": 4, "p": pytest.approx(0.375)}
    diff = r["difference"]
    assert diff["estimate"] == pytest.approx(25.0) and diff["clusters"] == 6 and "over videos" in diff["method"]
    assert r["a"]["interval"]["estimate"] == pytest.approx(50.0) and r["b"]["interval"]["estimate"] == pytest.approx(
        75.0
    )
    # 12 items in 6 videos: McNemar and the clustered interval agree that +25 points is not yet detectable
    assert r["verdict"] == "no detectable difference (B - A = +25.0 points, 95% CI -16.7 to 66.7)"


def test_verdict_words() -> None:
    method = "cluster bootstrap"
    assert verdict(Interval(3.1, 1.2, 5.0, 100, 20, method)) == "B is higher by 3.1 points, 95% CI 1.2-5.0"
    assert verdict(Interval(-3.1, -5.0, -1.2, 100, 20, method)) == "B is lower by 3.1 points, 95% CI 1.2-5.0"
    assert verdict(Interval(0.4, -1.0, 1.8, 100, 20, method)) == (
        "no detectable difference (B - A = +0.4 points, 95% CI -1.0 to 1.8)"
    )
    assert verdict(Interval(0.0, float("nan"), float("nan"), 1, 1, method)).startswith("no verdict")


def test_unmatched_failed_and_changed_items_are_listed_not_dropped(tmp_path: Path) -> None:
    fa = write_samples(tmp_path / "20250101_000000_samples_msvd_qa.jsonl", [True, False, True, None, True])
    fb = write_samples(tmp_path / "20250102_000000_samples_msvd_qa.jsonl", [True, True, True, True])  # no item 4
    lines = fb.read_text().splitlines()
    changed = json.loads(lines[2])
    changed["accuracy"]["answer"] = "another answer"  # same doc_id, different item: not paired
    fb.write_text("\n".join([*lines[:2], json.dumps(changed), lines[3]]) + "\n")
    r = compare_runs(fa, fb)
    assert r["only_in_a"] == ["4"] and r["only_in_b"] == [] and r["different_content"] == ["2"]
    assert (r["matched"], r["paired"], r["excluded_failures"]) == (3, 2, 1)
    assert r["a"]["failures"] == 1 and r["b"]["failures"] == 0


def test_cli_json_markdown_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fa = write_samples(
        tmp_path / "a" / "20250101_000000_samples_msvd_qa.jsonl", [True, False, None, True], videos=False
    )
    fb = write_samples(tmp_path / "b" / "20250101_000000_samples_msvd_qa.jsonl", [True, True, True, True], videos=False)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1  # a judge failure: refused by default
    captured = capsys.readouterr()
    assert "# msvd_qa / accuracy: B vs A" in captured.out and "items treated as independent" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("error: 1 of 8 judgements failed")
    assert main(["compare", str(fa), str(fb), "--json", "--max-failure-rate", "0.3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["paired"] == 3 and report["mcnemar"]["only_b"] == 1 and report["withheld"] == []
    assert report["a"]["judged"]["accuracy_all"]["estimate"] == 50.0 and report["a"]["interval"]["estimate"] == 200 / 3
    # 1 failure in 4 is over the default budget (5%): no verdict, and the reason
    assert main(["compare", str(fa), str(fb), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["difference"] is None and report["verdict"].startswith("no verdict: the judge failed")
    assert "A: [msvd_qa] judge failed on 1 of 4 items" in report["verdict"]
    write_samples(tmp_path / "c" / "20250101_000000_samples_msrvtt_qa.jsonl", [True])
    assert main(["compare", str(fa), str(tmp_path / "c")]) == 2
    assert "no samples for task 'msvd_qa'" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["compare", str(fa), str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no such file or folder")


# --- two real lmms-eval runs of our msvd_qa task ---------------------------------------------------------

lmms_eval = pytest.importorskip("lmms_eval")


def _evaluate_and_save(out: Path, answers: dict[str, str], stamp: str, limit: int | None = None) -> None:
    """What ``lmms-eval --tasks msvd_qa --log_samples --output_path out`` does, with a scripted model."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.loggers.evaluation_tracker import EvaluationTracker
    from lmms_eval.tasks import TaskManager
    from test_tasks_support import ScriptedModel

    from llamavid_eval.tasks import TASKS_DIR

    tracker = EvaluationTracker(output_path=str(out))
    results = simple_evaluate(
        model=ScriptedModel(lambda doc: answers[doc["id"]]),
        model_args="pretrained=org/m",
        tasks=["msvd_qa"],
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        evaluation_tracker=tracker,
        log_samples=True,
        bootstrap_iters=0,
        datetime_str=stamp,
        limit=limit,
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples, datetime_str=stamp)
    tracker.save_results_samples(task_name="msvd_qa", samples=samples["msvd_qa"])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from test_tasks_support import FAIL, judge_server, video_qa_raw

    from llamavid_eval.tasks.prepare import main as prepare

    root = tmp_path_factory.mktemp("compare")
    qa, videos = video_qa_raw(root / "raw")
    assert prepare(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(root / "data")]) == 0
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("LLAMAVID_DATA_ROOT", str(root / "data"))
        with judge_server(mp):
            _evaluate_and_save(root / "a", {"0": "dancing", "1": "a man", "2": "blue", "3": FAIL}, "20250101_100000")
            _evaluate_and_save(root / "b", {"0": "dancing", "1": "a woman", "2": "red"}, "20250102_100000", limit=3)
    finally:
        mp.undo()
    return root / "a", root / "b"


@pytest.mark.slow
def test_compare_two_real_runs(two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two_runs
    assert compare_runs(a, b)["difference"] is None  # A: 1 judge failure in 4, over the default budget
    r = compare_runs(a, b, max_failure_rate=0.5)
    # A: yes, no, no, failed; B (limit 3): yes, yes, yes -> items 0-2 paired, item 3 only in A (and failed there)
    assert r["task"] == "msvd_qa" and r["only_in_a"] == ["3"] and r["only_in_b"] == []
    assert (r["matched"], r["paired"]) == (3, 3)
    assert r["a"]["failures"] == 1 and r["a"]["interval"]["estimate"] == pytest.approx(100 / 3)
    assert r["difference"]["estimate"] == pytest.approx(200 / 3)
    assert r["mcnemar"] == {"only_a": 0, "only_b": 2, "p": pytest.approx(0.5)}
    assert r["clustered"] is True  # our tasks name each item's video
    assert main(["compare", str(a), str(b), "--max-failure-rate", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "1 item(s) only in A" in printed and "exact McNemar: only A right 0, only B right 2" in printed


def test_a_difference_mcnemar_does_not_support_is_not_called():
    """4 discordant items, all for B: the bootstrap interval excludes 0, the exact test (p = 0.125) does not."""
    difference = stats.paired_difference([0.0] * 10, [100.0] * 4 + [0.0] * 6, bounds=(-100.0, 100.0))
    assert difference.low > 0
    text = compare.verdict(difference, mcnemar_p=stats.mcnemar_exact(0, 4))
    assert text.startswith("no detectable difference (B - A = +40.0 points") and text.endswith(
        "exact McNemar p = 0.125)"
    )
    assert compare.verdict(difference).startswith("B is higher by 40.0 points")  # not a yes/no metric: interval alone


def test_a_doc_id_logged_twice_is_listed_not_paired(tmp_path):
    a = write_samples(tmp_path / "a" / "20250101_000000_samples_msvd_qa.jsonl", [True, False, True, True])
    b = write_samples(tmp_path / "b" / "20250102_000000_samples_msvd_qa.jsonl", [True, True, True, True])
    lines = a.read_text().splitlines()
    a.write_text("\n".join([*lines, lines[1]]) + "\n")  # doc 1 logged twice in run A
    report = compare_runs(a, b)
    assert report["duplicate_ids"] == ["1"] and report["matched"] == 3 and "1" not in report["only_in_b"]


def test_items_pair_only_when_id_and_video_agree_too(tmp_path):
    """MSVD-QA asks "what is the man doing?" about many videos: after a re-prepare that moved doc_ids,
    the same doc_id and question can be another video's item, which must not be paired."""
    a = write_samples(tmp_path / "a" / "20250101_000000_samples_msvd_qa.jsonl", [True, False, True, True])
    b = write_samples(tmp_path / "b" / "20250102_000000_samples_msvd_qa.jsonl", [True, True, True, True])
    lines = [json.loads(line) for line in b.read_text().splitlines()]
    lines[1]["accuracy"]["video"] = "another"
    lines[2]["accuracy"]["id"] = 99
    b.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = compare_runs(a, b)
    assert report["different_content"] == ["1", "2"] and report["matched"] == 2


def test_runs_without_a_common_item_fail_with_the_counts(tmp_path, capsys):
    a = write_samples(tmp_path / "a" / "20250101_000000_samples_msvd_qa.jsonl", [True, False, True])
    b = write_samples(tmp_path / "b" / "20250102_000000_samples_msvd_qa.jsonl", [True, True, True])
    lines = [json.loads(line) for line in b.read_text().splitlines()]
    b.write_text("".join(json.dumps({**line, "doc_id": line["doc_id"] + 100}) + "\n" for line in lines))
    assert main(["compare", str(a), str(b)]) == 1
    out, err = capsys.readouterr()
    assert "**no verdict: the runs share no item (3 only in A, 3 only in B, 0 with one doc_id" in out
    assert err.strip().splitlines()[-1].startswith("error: the runs share no item (3 only in A, 3 only in B")


def test_a_run_over_the_failure_budget_shows_no_number(tmp_path, capsys):
    a = write_samples(tmp_path / "a" / "20250101_000000_samples_msvd_qa.jsonl", [True, False, True, True])
    b = write_samples(tmp_path / "b" / "20250102_000000_samples_msvd_qa.jsonl", [True, None, True, True])
    assert main(["compare", str(a), str(b)]) == 1  # 1 failure in 4: over the default budget (5%)
    out = capsys.readouterr().out
    (line_b,) = [line for line in out.splitlines() if line.startswith("- B:")]
    assert line_b.endswith("judge failed (1 of 4 items), no score; 4 items, 1 judge failure(s)")
    assert "- withheld: B: [msvd_qa] judge failed on 1 of 4 items" in out and "accuracy_all (ALL" in out
