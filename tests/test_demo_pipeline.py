"""The README's main job on a smaller slice: generate, fine-tune, evaluate through lmms-eval, tabulate.

Asserts the fine-tuned tiny model beats chance by a clear margin while the untrained one does not.
"""

from __future__ import annotations

import json

import pytest

from llamavid_eval.demo import main


def _accuracy(work, run: str) -> dict[str, float]:
    (results,) = (work / "eval" / run).rglob("*_results.json")
    metrics = json.loads(results.read_text())["results"]["llamavid_demo"]
    return {key.split(",")[0]: value for key, value in metrics.items() if key.startswith("accuracy")}


@pytest.mark.slow
def test_demo_learns_well_above_chance(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "--train", "200", "--test", "40", "--epochs", "8"]) == 0
    meta = json.loads((tmp_path / "data" / "llamavid_demo" / "meta.json").read_text())
    tested = meta["splits"]["test"]["per_type"]
    chance = sum(meta["question_types"][q]["chance"] * tested[q]["questions"] for q in tested) / sum(
        tested[q]["questions"] for q in tested
    )
    tuned, untrained = _accuracy(tmp_path, "fine-tuned"), _accuracy(tmp_path, "zero-shot")
    assert tuned["accuracy"] >= chance + 20, (tuned, chance)
    assert tuned["accuracy_colour"] >= 80
    assert untrained["accuracy"] < chance
    printed = capsys.readouterr().out
    assert "llama-vid-tiny-finetuned" in printed and "llamavid_demo/accuracy" in printed
    assert (tmp_path / "leaderboard" / "leaderboard.html").is_file()
