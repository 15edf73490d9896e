"""Judge comparison (local stand-in and the llamavid_eval.judges.agreement contract) and the matplotlib plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llamavid_eval.results import agreement, plots
from llamavid_eval.results.__main__ import main
from matplotlib.image import imread


def rec(verdict: bool | None, score: int | None = None, prediction: str = "p", failed: bool | None = None) -> dict:
    return {"question": "q", "answer": "a", "prediction": prediction, "verdict": verdict, "score": score,
            "failed": verdict is None if failed is None else failed}


def test_local_compare_numbers() -> None:
    a = [rec(True, 5), rec(True, 4), rec(False, 1), rec(False, 0), rec(None)]
    b = [rec(True, 5), rec(False, 2), rec(False, 1), rec(False, 1), rec(True, 3)]
    stats = agreement.local_compare(a, b)
    assert stats["n"] == 5 and stats["n_both_valid"] == 4 and stats["failed_a"] == 1 and stats["failed_b"] == 0
    assert stats["verdict_agreement"] == pytest.approx(0.75)
    assert stats["cohen_kappa"] == pytest.approx(0.5)  # po .75, pe .5
    assert stats["score_mae"] == pytest.approx(0.75)
    assert agreement.verdict_matrix(a, b) == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    with pytest.raises(ValueError):
        agreement.local_compare(a, b[:2])


def test_compare_uses_judges_layer_when_present() -> None:
    a, b = [rec(True, 5), rec(False, 1)], [rec(True, 4), rec(True, 3)]
    stats, provider = agreement.compare(a, b)
    assert provider in {"llamavid_eval.judges.agreement.compare", "llamavid_eval.results.agreement.local_compare (llamavid_eval.judges.agreement not available)"}
    assert isinstance(stats, dict) and stats
    flat = agreement.flat_stats({"n": 2, "confusion": {"yes_yes": 1}, "examples": [1]})
    assert flat == {"n": 2, "confusion.yes_yes": 1}


def test_align_leaves_out_different_predictions() -> None:
    pair = agreement.align("msvd_qa", "x", "A", {"0": rec(True), "1": rec(True), "2": rec(True)}, "B", {"0": rec(False), "1": rec(True, prediction="other")})
    assert pair.ids == ["0"] and pair.prediction_mismatches == 1
    assert pair.a[0]["task"] == "msvd_qa" and pair.a[0]["doc_id"] == "0"
    frame = agreement.side_by_side(pair)
    assert list(frame["agree"]) == [False]


def _nontrivial_png(path: Path) -> None:
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plots_png_and_svg(tmp_path: Path) -> None:
    pairs = [("Abuse", "Abuse"), ("Arrest", "UNMAPPED"), ("Normal", "Normal"), ("Normal", "Arson"), ("Shooting", "Fighting"), ("Odd", "Normal")]
    labels_gold, labels_pred, counts = plots.confusion_counts(pairs)
    assert labels_gold[-1] == "Odd" and labels_pred[-1] == "UNMAPPED" and counts.sum() == len(pairs)
    assert counts[labels_gold.index("Arrest"), labels_pred.index("UNMAPPED")] == 1
    made = plots.confusion_matrix(pairs, "t", tmp_path / "cm") + plots.per_class_accuracy({"1 fps": pairs, "6 fps": pairs[:3]}, tmp_path / "bars")
    pair = agreement.align("msvd_qa", "x", "A", {"0": rec(True), "1": rec(None)}, "B", {"0": rec(False), "1": rec(True)})
    made += plots.agreement_matrix(pair, tmp_path / "agree")
    assert [p.suffix for p in made] == [".png", ".svg"] * 3
    for path in made:
        assert path.stat().st_size > 5000
        if path.suffix == ".svg":
            assert path.read_text().lstrip().startswith("<?xml")
        else:
            _nontrivial_png(path)
    assert plots.accuracy_vs_fps([], tmp_path / "none") == []


def test_judges_cli_on_two_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def write(name: str, judge: str, verdicts: list[bool | None]) -> Path:
        path = tmp_path / name
        lines = [{"doc_id": i, "accuracy": {**rec(v, None if v is None else 3), "judge": judge}} for i, v in enumerate(verdicts)]
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return path

    a, b = write("a.jsonl", "openai:gpt-3.5-turbo", [True, False, True, None]), write("b.jsonl", "hf:llama", [True, True, True, False])
    assert main(["judges", str(a), str(b), "--task", "msvd_qa", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "openai:gpt-3.5-turbo vs hf:llama" in out
    assert {p.name for p in (tmp_path / "cmp").iterdir()} >= {"judge_items.csv", "judge_agreement.png", "judge_agreement.svg", "judge_comparison.html", "judge_comparison.md"}
    assert main(["judges", str(a), str(tmp_path / "missing.jsonl")]) == 1
