"""llamavid_eval.results.load / llamavid_eval.results.table on hand-written lmms-eval output folders: the awkward cases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from llamavid_eval.core import scores
from llamavid_eval.results import table
from llamavid_eval.results.__main__ import main
from llamavid_eval.results.load import load_reference, load_runs, parse_model_args, parse_task_metrics, short_checkpoint

CKPT = "pretrained=YanweiLi/llama-vid-7b-full-224-video-fps-1"


def write_run(
    root: Path,
    stamp: str,
    results: dict[str, Any],
    model_args: str = f"{CKPT},fps=1,max_frames=64",
    extra: dict | None = None,
    samples: dict[str, list[dict]] | None = None,
    folder: str = "YanweiLi__llama-vid-7b-full-224-video-fps-1",
) -> Path:
    """A results.json shaped like lmms-eval 0.7.3's, plus optional samples files."""
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "results": results,
        "config": {"model": "llamavid", "model_args": model_args, "limit": None},
        "date": stamp,
        **(extra or {}),
    }
    path = out / f"{stamp}_results.json"
    path.write_text(json.dumps(data))
    for task, lines in (samples or {}).items():
        (out / f"{stamp}_samples_{task}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def msvd(acc: Any, score: Any = 3.1) -> dict[str, Any]:
    return {
        "alias": "msvd_qa",
        "accuracy,none": acc,
        "accuracy_stderr,none": 0.5,
        "mean_score,none": score,
        "mean_score_stderr,none": "N/A",
        "samples": 10,
    }


def test_metric_keys_stderr_and_missing_values() -> None:
    values, errors = parse_task_metrics(
        {
            "alias": "x",
            "accuracy,none": 61.5,
            "accuracy_stderr,none": 1.2,
            "accuracy_stderr_clt,none": 1.1,
            "acc_arrest,none": float("nan"),
            "score,none": "N/A",
            "exact_match,flexible": 40,
            "submission,none": "/tmp/sub.json",
            "acc": 0.5,
            "acc_stderr": 0.01,
        }
    )
    assert values == {"accuracy": 61.5, "acc_arrest": None, "score": None, "exact_match[flexible]": 40.0, "acc": 0.5}
    assert errors == {"accuracy": 1.2, "acc": 0.01}


def test_model_args_and_checkpoint_names() -> None:
    assert parse_model_args("pretrained=/a/b,fps=6,max_frames=300") == {
        "pretrained": "/a/b",
        "fps": "6",
        "max_frames": "300",
    }
    assert parse_model_args({"pretrained": "x", "fps": 1}) == {"pretrained": "x", "fps": "1"}
    assert short_checkpoint("YanweiLi/llama-vid-13b-full-224-video-fps-1") == "llama-vid-13b-full-224-video-fps-1"
    assert short_checkpoint("/ckpt/ucf-ft/checkpoint-500") == "ucf-ft/checkpoint-500"
    assert short_checkpoint("/runs/ucf-lora/adapter") == "ucf-lora/adapter"  # llamavid train's output folders
    assert short_checkpoint("/runs/ucf-full/model/") == "ucf-full/model"


def test_failed_partial_and_broken_runs(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        "20250101_100000",
        {"msvd_qa": msvd(55.0)},
        extra={
            "n-samples": {"msvd_qa": {"original": 100, "effective": 10}},
            "config": {"model": "llamavid", "model_args": CKPT, "limit": 10},
        },
    )
    write_run(
        tmp_path,
        "20250102_100000",
        {"msvd_qa": {"alias": "msvd_qa", "accuracy,none": "N/A", "accuracy_stderr,none": "N/A"}},
        model_args=f"{CKPT},fps=6",
    )
    write_run(tmp_path, "20250103_100000", {}, model_args=f"{CKPT},fps=2")
    (tmp_path / "YanweiLi__llama-vid-7b-full-224-video-fps-1" / "20250104_100000_results.json").write_text(
        '{"results": {"msvd_qa": {"accur'
    )
    runs, problems = load_runs([tmp_path, tmp_path / "does-not-exist"])
    assert len(runs) == 3
    assert any("unreadable" in p for p in problems) and any("does-not-exist" in p for p in problems)
    partial = next(r for r in runs if r.fps is None)
    assert "limit=10" in partial.notes and "msvd_qa: 10/100 docs" in partial.notes
    board = table.build(runs, [], reference_mode="none")
    markdown = table.to_markdown(board)
    failed_row = next(line for line in markdown.splitlines() if "| 6 |" in line)
    assert "| — |" in failed_row and "| 0 |" not in failed_row  # missing, never zero
    assert any("no results" in line for line in markdown.splitlines() if "| 2 |" in line)
    assert math.isnan(board.frame.loc[board.frame["fps"] == "6", "msvd_qa/accuracy"].iloc[0])


def test_formats_across_versions(tmp_path: Path) -> None:
    """Old harness file names, no configs / n-samples, POSIX date, dict model_args, group results."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "results_2024-05-01T10-00-00.123.json").write_text(
        json.dumps(
            {
                "results": {"videochatgpt": {"alias": "videochatgpt", "gpt_eval_score_context,none": 3.4}},
                "groups": {"videochatgpt_all": {"gpt_eval_score_context,none": 3.2}},
                "config": {"model": "llava", "model_args": {"pretrained": "liuhaotian/llava", "fps": 1}},
                "date": 1714557600.0,
            }
        )
    )
    runs, problems = load_runs([old])
    assert problems == []
    (run,) = runs
    assert run.checkpoint == "llava" and run.fps == 1.0 and run.date.startswith("2024-05-01")
    assert run.metrics["videochatgpt_all"] == {"gpt_eval_score_context": 3.2}
    assert run.n_samples["videochatgpt"] == (None, None)


def test_latest_per_task_and_all(tmp_path: Path) -> None:
    write_run(tmp_path, "20250101_100000", {"msvd_qa": msvd(50.0), "ucf_crime": {"accuracy,none": 40.0}})
    write_run(tmp_path, "20250105_100000", {"msvd_qa": msvd(60.0)})
    runs, _ = load_runs([tmp_path])
    latest = table.build(runs, [], latest=True, reference_mode="none").frame
    assert len(latest) == 1
    assert latest["msvd_qa/accuracy"].iloc[0] == 60.0 and latest["ucf_crime/accuracy"].iloc[0] == 40.0
    assert latest["date (UTC)"].iloc[0] == "2025-01-05 02:00:00"  # lmms-eval's stamp is UTC+8
    assert len(table.build(runs, [], latest=False, reference_mode="none").frame) == 2


def test_sort_best_first_missing_last_and_errors(tmp_path: Path) -> None:
    for i, (acc, fps) in enumerate([(50.0, 1), ("N/A", 2), (71.0, 3)]):
        write_run(tmp_path, f"2025010{i + 1}_100000", {"msvd_qa": msvd(acc)}, model_args=f"{CKPT},fps={fps}")
    runs, _ = load_runs([tmp_path])
    board = table.sort(table.build(runs, load_reference(), reference_mode="matching"), "msvd_qa/accuracy")
    values = list(board.frame["msvd_qa/accuracy"])
    assert values[:3] == [71.0, 70.0, 69.7] and math.isnan(values[-1])
    interval = board.intervals[(0, "msvd_qa/accuracy")]  # no samples: from lmms-eval's stderr, following its row
    assert (interval.low, interval.high) == pytest.approx((71.0 - 1.96 * 0.5, 71.0 + 1.96 * 0.5), abs=1e-3)
    assert "stderr" in interval.method and (1, "msvd_qa/accuracy") not in board.intervals  # reported: none
    assert table.resolve_column(board, "mean_score") == "msvd_qa/mean_score"
    assert table.resolve_column(board, "msvd_qa") == "msvd_qa/accuracy"  # a task: its headline column, as --help says
    with pytest.raises(KeyError, match="unknown"):
        table.resolve_column(board, "nope")


def test_reference_rows_are_marked_and_filtered() -> None:
    reference = load_reference()
    assert {r.kind for r in reference} == {"reported"}
    study = [r for r in reference if r.source == "study"]
    assert any(r.metrics.get("msvd_qa", {}).get("accuracy") == 59.17 for r in study)
    assert {r.metrics["ucf_crime_judged"]["accuracy"] for r in study if "ucf_crime_judged" in r.metrics} == {
        57.5,
        57.9,
        62.0,
        65.3,
    }
    assert any(r.metrics.get("animal_kingdom", {}).get("mean_score") == 2.66 for r in study)
    paper = [r for r in reference if r.source == "paper"]
    assert any(r.metrics.get("mme", {}).get("mme_perception_score") == 1542.3 for r in paper)
    board = table.build([], reference, reference_mode="all")
    assert set(board.frame["kind"]) == {"reported"} and "gqa/exact_match" in board.metric_columns


def test_judges_from_samples_nested_and_flat(tmp_path: Path) -> None:
    nested = [
        {
            "doc_id": i,
            "accuracy": {
                "id": i,
                "question": "q",
                "answer": "a",
                "prediction": "p",
                "judgement": {
                    "backend": "hf",
                    "model": "meta-llama/Meta-Llama-3-8B-Instruct",
                    "verdict": None if i == 0 else True,
                    "score": None if i == 0 else 4,
                    "failed": i == 0,
                },
            },
        }
        for i in range(3)
    ]
    write_run(tmp_path, "20250101_100000", {"msvd_qa": msvd(50.0)}, samples={"msvd_qa": nested})
    (run,), _ = load_runs([tmp_path])
    assert run.judge == "hf:meta-llama/Meta-Llama-3-8B-Instruct"
    assert run.metrics["msvd_qa"]["judge_failures"] == 1.0  # derived from the samples: the task logged none


def test_rejudge_summary_becomes_a_row_and_a_judge_pair(tmp_path: Path) -> None:
    records = [
        {
            "doc_id": i,
            "accuracy": {
                "id": i,
                "question": f"q{i}",
                "answer": "a",
                "prediction": "a" if i % 2 else "b",
                "judge": "openai:gpt-3.5-turbo",
                "verdict": bool(i % 2),
                "score": 5 if i % 2 else 1,
                "failed": False,
            },
        }
        for i in range(4)
    ]
    path = write_run(tmp_path, "20250101_100000", {"msvd_qa": msvd(50.0)}, samples={"msvd_qa": records})
    items = [
        {
            "task": "msvd_qa",
            "doc_id": i,
            "id": i,
            "question": f"q{i}",
            "answer": "a",
            "prediction": "a" if i % 2 else "b",
            "verdict": i != 0,
            "score": 4,
            "failed": False,
            "judge": "exact-match",
        }
        for i in range(4)
    ]
    (path.parent / "20250101_100000_rejudge_exact-match_items.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in items)
    )
    summary = {
        "results": {"msvd_qa": {"n": 4, "accuracy": 75.0, "mean_score": 4.0, "failures": 0, "judge": "exact-match"}},
        "rejudge": {
            "judge": "exact-match",
            "created": "2025-01-02T09:00:00+00:00",
            "date_id": "20250101_100000",
            "model_dir": "x",
        },
    }
    (path.parent / "20250101_100000_rejudge_exact-match_summary.json").write_text(json.dumps(summary))
    out = tmp_path / "board"
    assert main(["table", str(tmp_path), "--out", str(out), "--reference", "none", "--no-plots"]) == 0
    frame = table.build(*[load_runs([tmp_path])[0]], reference_mode="none").frame
    assert sorted(frame["judge"]) == ["exact-match", "openai:gpt-3.5-turbo"]
    assert frame.loc[frame["judge"] == "exact-match", "msvd_qa/accuracy"].iloc[0] == 75.0
    assert frame.loc[frame["judge"] == "exact-match", "fps"].iloc[0] == "1"  # configuration taken from the original run
    markdown = (out / "leaderboard.md").read_text()
    assert "## Judge comparison" in markdown and "exact-match vs openai:gpt-3.5-turbo" in markdown


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    write_run(tmp_path, "20250101_100000", {"msvd_qa": msvd(50.0)})
    assert main(["table", str(tmp_path), "--out", str(tmp_path / "o"), "--sort", "bogus", "--no-plots"]) == 2
    assert "unknown" in capsys.readouterr().err
    assert main(["table", str(tmp_path), "--out", str(tmp_path / "o"), "--all", "--no-plots"]) == 0
    csv_text = (tmp_path / "o" / "leaderboard.csv").read_text()
    header = csv_text.splitlines()[0].split(",")
    assert header[header.index("msvd_qa/accuracy") + 1 : header.index("msvd_qa/accuracy") + 5] == [
        "msvd_qa/accuracy_ci_low",
        "msvd_qa/accuracy_ci_high",
        "msvd_qa/accuracy_n",
        "msvd_qa/accuracy_clusters",
    ]
    assert "69.7" in csv_text
    (tmp_path / "a_file").write_text("")
    assert main(["table", str(tmp_path), "--out", str(tmp_path / "a_file"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(
        "is a file; name a folder (it is created when missing)"
    )


def test_dates_are_utc_whatever_zone_lmms_eval_wrote(tmp_path: Path) -> None:
    """lmms-eval names files in Asia/Singapore time (UTC+8) unless --timezone, which it records in the config."""
    write_run(tmp_path, "20250101_050000", {"msvd_qa": msvd(50.0)})
    ny = {"model": "llamavid", "model_args": f"{CKPT},fps=6", "resolved_cli_args": {"timezone": "America/New_York"}}
    write_run(tmp_path, "20250701_050000", {"msvd_qa": msvd(50.0)}, model_args=f"{CKPT},fps=6", extra={"config": ny})
    runs, _ = load_runs([tmp_path])
    assert sorted(r.date for r in runs) == ["2024-12-31 21:00:00", "2025-07-01 09:00:00"]  # EDT is UTC-4 in July
    markdown = table.to_markdown(table.build(runs, [], reference_mode="none"))
    assert "| date (UTC) |" in markdown and "2024-12-31 21:00:00" in markdown


def qa_samples(verdicts: list[bool | None], videos: bool = True) -> list[dict]:
    return [
        {
            "doc_id": i,
            "accuracy": {
                "id": i,
                "question": f"q{i}",
                "answer": "a",
                "prediction": "p",
                **({"video": f"v{i // 2}.mp4"} if videos else {}),
                "judgement": {
                    "backend": "exact",
                    "model": "",
                    "verdict": v,
                    "score": None if v is None else 5 * v,
                    "failed": v is None,
                },
            },
        }
        for i, v in enumerate(verdicts)
    ]


def test_headline_view_shows_intervals_and_detail_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    verdicts = [True, False, True, True, None, False, True, True, False, True]  # 6 of 9 judged: 66.67
    ucf = {"alias": "ucf_crime", "accuracy,none": 50.0, "acc_abuse,none": 100.0, "unmapped,none": 1}
    qa = {"alias": "msvd_qa", "accuracy,none": 600 / 9, "accuracy_stderr,none": "N/A", "judge_failures,none": 1}
    write_run(tmp_path, "20250101_100000", {"msvd_qa": qa, "ucf_crime": ucf}, samples={"msvd_qa": qa_samples(verdicts)})
    # 1 judge failure in 10 items: over the default budget (5%) the judged cells are withheld, never a score
    (withheld,), _ = load_runs([tmp_path])
    assert withheld.metrics["msvd_qa"]["accuracy"] is None and withheld.withheld["msvd_qa"].endswith("1 of 10 items")
    board = table.build([withheld], reference_mode="none")
    assert "| judge failed (1 of 10 items) |" in table.to_markdown(board)
    monkeypatch.setenv("LLAMAVID_JUDGE_MAX_FAILURE_RATE", "0.2")
    (run,), _ = load_runs([tmp_path])
    assert run.metrics["msvd_qa"]["accuracy_all"] == pytest.approx(60.0)  # older run: ALL from its logged verdicts
    assert (run.metrics["msvd_qa"]["judged_items"], run.metrics["msvd_qa"]["judge_failures"]) == (10, 1)
    interval = run.intervals["msvd_qa"]["accuracy"]
    assert interval.n == 9 and interval.clusters == 5 and "cluster bootstrap" in interval.method
    assert interval.low < 600 / 9 < interval.high
    assert "ucf_crime" not in run.intervals or "accuracy" not in run.intervals["ucf_crime"]  # no samples, no stderr
    out = tmp_path / "o"
    table_args = ["table", str(tmp_path), "--out", str(out), "--reference", "none", "--no-plots"]
    assert main([*table_args, "--max-failure-rate", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert f"| {600 / 9:.1f} ± {interval.half_width:.1f} |" in printed
    assert "acc_abuse" not in printed and "judge_failures" not in printed and "unmapped" not in printed
    assert "Interval method: cluster bootstrap" in printed
    assert main([*table_args, "--detail", "--max-failure-rate", "0.2"]) == 0
    detail = capsys.readouterr().out
    assert "ucf_crime/acc_abuse" in detail and "msvd_qa/judge_failures" in detail and "ucf_crime/unmapped" in detail
    assert "msvd_qa/accuracy_all" in detail and "msvd_qa/judged_items" in detail and "| 60.0 " in detail
    assert "ucf_crime/acc_abuse" in (out / "leaderboard.html").read_text()
    # one judge failure in 10 items: refused by default, with the count and the reason in the last line
    assert main(table_args) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 10 judgements failed")


def test_unclustered_samples_say_so(tmp_path: Path) -> None:
    qa = {"alias": "msvd_qa", "accuracy,none": 50.0}
    write_run(
        tmp_path, "20250101_100000", {"msvd_qa": qa}, samples={"msvd_qa": qa_samples([True, False] * 3, videos=False)}
    )
    (run,), _ = load_runs([tmp_path])
    assert "bootstrap (percentile) over items" in run.intervals["msvd_qa"]["accuracy"].method  # no video: not clustered


def test_task_written_interval_and_clustered_stderr_without_samples(tmp_path: Path) -> None:
    """Our tasks write <metric>_ci_low/_ci_high/_n into results.json; lmms-eval its clustered stderr: used, not shown as metrics."""
    block = {
        "alias": "msvd_qa",
        "accuracy,none": 60.0,
        "accuracy_stderr,none": "N/A",
        "accuracy_stderr_clustered,none": 2.5,
        "accuracy_ci_low,none": 55.0,
        "accuracy_ci_high,none": 66.0,
        "accuracy_n,none": 120,
        "mean_score,none": 3.0,
        "mean_score_stderr_clt,none": 0.1,
        "mean_score_stderr_clustered,none": 0.2,
    }
    write_run(tmp_path, "20250101_100000", {"msvd_qa": block})
    (run,), _ = load_runs([tmp_path])
    assert set(run.metrics["msvd_qa"]) == {"accuracy", "mean_score"}
    accuracy, score = run.intervals["msvd_qa"]["accuracy"], run.intervals["msvd_qa"]["mean_score"]
    assert (accuracy.low, accuracy.high, accuracy.n) == (55.0, 66.0, 120)
    assert accuracy.method == "cluster bootstrap (percentile) over videos, 2000 resamples, seed 0"
    assert score.half_width == pytest.approx(1.959964 * 0.2) and "clustered stderr" in score.method


@pytest.mark.parametrize(
    ("metric", "values", "exact"),
    [
        ("accuracy", [0.0] * 12, True),  # 0% correct: the exact binomial bound, never a zero-width bootstrap
        ("accuracy", [100.0] * 12, True),
        ("mean_score", [5.0] * 12, True),  # the judge's top score on every item
        ("mean_score", [0.0, 5.0] * 6, False),
        ("accuracy", [0.0, 100.0, 100.0] * 4, False),
        ("accuracy", [0.0] * 11 + [100.0], False),  # 8.3%: one item off the bound is a bootstrap again
    ],
)
def test_a_task_written_interval_is_labelled_with_the_method_that_made_it(
    tmp_path: Path, metric: str, values: list[float], exact: bool
) -> None:
    """results.json keeps an interval's ends, n and clusters; the table's method line must still name the rule
    that the task's ``mean_interval`` applied (the demo's 0% zero-shot row was labelled a bootstrap)."""
    made = scores.mean_interval(values, [f"v{i // 2}" for i in range(len(values))], scores.MEASURES[metric][2])
    block = {"alias": "msvd_qa", **{f"{k},none": v for k, v in scores.interval_values(metric, made).items()}}
    write_run(tmp_path, "20250101_100000", {"msvd_qa": block})
    (run,), _ = load_runs([tmp_path])
    shown = run.intervals["msvd_qa"][metric]
    assert (shown.low, shown.high, shown.method) == (made.low, made.high, made.method)
    assert ("Clopper-Pearson" in shown.method) is exact
    # what it rests on: items and the videos they were resampled by (the exact bound counts videos as trials)
    assert (shown.n, shown.clusters) == (made.n, made.clusters) and shown.describe() == made.describe()


def test_a_named_input_that_cannot_be_read_fails_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The readable runs are still tabulated, but the exit status and the last line say what was left out."""
    write_run(tmp_path / "good", "20250101_100000", {"msvd_qa": msvd(50.0)})
    missing = tmp_path / "nope"
    assert main(["table", str(tmp_path / "good"), str(missing), "--out", str(tmp_path / "o"), "--no-plots"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: 1 input problem(s), left out of the table:") and str(missing) in last
    assert (tmp_path / "o" / "leaderboard.md").is_file()


def test_a_newer_partial_run_does_not_replace_a_complete_one(tmp_path: Path) -> None:
    """A --limit smoke test after the full run must not become the configuration's number."""
    write_run(
        tmp_path,
        "20250101_100000",
        {"msvd_qa": msvd(50.0)},
        extra={"n-samples": {"msvd_qa": {"original": 10, "effective": 10}}},
    )
    write_run(
        tmp_path,
        "20250102_100000",
        {"msvd_qa": msvd(90.0)},
        extra={"n-samples": {"msvd_qa": {"original": 10, "effective": 3}}},
    )
    frame = table.build(load_runs([tmp_path])[0], reference_mode="none").frame
    assert list(frame["msvd_qa/accuracy"]) == [50.0]


def test_per_type_columns_get_intervals_from_the_one_logged_record(tmp_path: Path) -> None:
    """A task that logs each item once, under its first metric (``accuracy``), and writes interval rows only for
    it: a per-type column (``accuracy_colour``) gets the cluster-bootstrap interval of its own items, by hand:
    colour items 1, 1, 0 -> 66.7, count items 1, 0 -> 50; a value the items do not reproduce gets none."""
    kinds = ["colour", "count", "colour", "colour", "count"]
    correct = [True, True, True, False, False]
    lines = [
        {
            "doc_id": i,
            "accuracy": {
                "question_type": kind,
                "video": f"v{i // 2 if kind == 'count' else i}",
                "item_value": 100.0 * ok,
            },
            "accuracy_colour": None,
            "accuracy_count": None,
        }
        for i, (kind, ok) in enumerate(zip(kinds, correct, strict=True))
    ]
    block = {"alias": "demo", "accuracy,none": 60.0, "accuracy_colour,none": 200 / 3, "accuracy_count,none": 50.0}
    block |= {"accuracy_ci_low,none": 20.0, "accuracy_ci_high,none": 100.0, "accuracy_n,none": 5}
    write_run(tmp_path, "20250101_100000", {"demo": block}, samples={"demo": lines})
    (run,), _ = load_runs([tmp_path])
    colour, count = run.intervals["demo"]["accuracy_colour"], run.intervals["demo"]["accuracy_count"]
    assert colour.estimate == pytest.approx(200 / 3) and colour.n == 3 and "bootstrap" in colour.method
    assert 0.0 <= colour.low <= colour.estimate <= colour.high <= 100.0
    assert count.estimate == pytest.approx(50.0) and count.n == 2
    assert run.intervals["demo"]["accuracy"].method == colour.method  # one line under the table serves both

    block["accuracy_colour,none"] = 50.0  # not what the logged items give: no interval rather than a wrong one
    write_run(tmp_path / "other", "20250101_100000", {"demo": block}, samples={"demo": lines})
    (other,), _ = load_runs([tmp_path / "other"])
    assert "accuracy_colour" not in other.intervals["demo"]


def test_a_lora_run_is_named_by_base_and_adapter(tmp_path: Path) -> None:
    """Not by its base alone (it would read as the zero-shot model), and two adapters stay two rows."""
    for i, adapter in enumerate(("/runs/a/adapter", "/runs/b/adapter")):
        write_run(
            tmp_path / str(i), "20250101_100000", {"msvd_qa": msvd(50.0 + i)}, model_args=f"{CKPT},lora={adapter}"
        )
    runs, _ = load_runs([tmp_path])
    names = sorted(run.checkpoint for run in runs)
    assert names == [f"{short_checkpoint(CKPT)} + LoRA a/adapter", f"{short_checkpoint(CKPT)} + LoRA b/adapter"]
    assert len(table.build(runs, [], reference_mode="none").frame) == 2
