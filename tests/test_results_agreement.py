"""Judge comparison on the leaderboard page (through llamavid_eval.judges.agreement) and the matplotlib plots (results/report.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.image import imread

from llamavid_eval.core.ucf import confusion_counts
from llamavid_eval.results import agreement, report


def rec(verdict: bool | None, score: int | None = None, prediction: str = "p", failed: bool | None = None) -> dict:
    """A judgement; a usable one needs a verdict and a score (as judges.summary counts it), default score 3."""
    score = score if score is not None or verdict is None else 3
    return {
        "question": "q",
        "answer": "a",
        "prediction": prediction,
        "verdict": verdict,
        "score": score,
        "failed": verdict is None if failed is None else failed,
    }


def test_compare_is_the_judge_layers_one_implementation() -> None:
    a = [rec(True, 5), rec(True, 4), rec(False, 1), rec(False, 0), rec(None)]
    b = [rec(True, 5), rec(False, 2), rec(False, 1), rec(False, 1), rec(True, 3)]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        x.update(task="t", doc_id=i)
        y.update(task="t", doc_id=i)
    stats = agreement.compare(a, b)
    assert stats["matched"] == 5 and stats["n"] == 4 and stats["failed_a"] == 1 and stats["failed_b"] == 0
    assert stats["agreement"] == pytest.approx(75.0)
    assert stats["kappa"] == pytest.approx(0.5)  # po .75, pe .5
    assert agreement.verdict_matrix(a, b) == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    flat = agreement.flat_stats(stats)
    assert flat["kappa"] == pytest.approx(0.5) and "kappa 95% CI" in flat and flat["confusion.yes_no"] == 1
    assert "bootstrap" in agreement.interval_method(stats)


def test_align_leaves_out_different_predictions() -> None:
    pair = agreement.align(
        "msvd_qa",
        "x",
        "A",
        {"0": rec(True), "1": rec(True), "2": rec(True)},
        "B",
        {"0": rec(False), "1": rec(True, prediction="other")},
    )
    assert pair.ids == ["0"] and pair.prediction_mismatches == 1
    assert pair.a[0]["task"] == "msvd_qa" and pair.a[0]["doc_id"] == "0"
    frame = agreement.side_by_side(pair)
    assert list(frame["agree"]) == [False]


def _nontrivial_png(path: Path) -> None:
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plots_png_and_svg(tmp_path: Path) -> None:
    pairs = [
        ("Abuse", "Abuse"),
        ("Arrest", "UNMAPPED"),
        ("Normal", "Normal"),
        ("Normal", "Arson"),
        ("Shooting", "Fighting"),
        ("Odd", "Normal"),
    ]
    labels_gold, labels_pred, counts = confusion_counts(pairs)
    assert labels_gold[-1] == "Odd" and labels_pred[-1] == "UNMAPPED" and sum(map(sum, counts)) == len(pairs)
    assert counts[labels_gold.index("Arrest")][labels_pred.index("UNMAPPED")] == 1
    made = report.confusion_matrix(pairs, "t", tmp_path / "cm") + report.per_class_accuracy(
        {"1 fps": pairs, "6 fps": pairs[:3]}, tmp_path / "bars"
    )
    pair = agreement.align(
        "msvd_qa", "x", "A", {"0": rec(True), "1": rec(None)}, "B", {"0": rec(False), "1": rec(True)}
    )
    made += report.agreement_matrix(pair, tmp_path / "agree")
    assert [p.suffix for p in made] == [".png", ".svg"] * 3
    for path in made:
        assert path.stat().st_size > 5000
        if path.suffix == ".svg":
            assert path.read_text().lstrip().startswith("<?xml")
        else:
            _nontrivial_png(path)
    assert report.accuracy_vs_fps([], tmp_path / "none") == []
