"""animal_kingdom: prepared QA items judged for relevance through the real judge layer."""

from __future__ import annotations

import pytest
from test_tasks_support import ScriptedModel, animal_kingdom_raw, evaluate, judge_server, metric

from llamavid_eval.tasks.prepare import main
from llamavid_eval.tasks.prepare.animal_kingdom import QUESTION, to_sentence


@pytest.mark.parametrize(
    ("raw", "sentence"),
    [("The bird is flying.", "The bird is flying."), ("the fish is swimming", "The fish is swimming."),
     ("lizard is keeping still", "The lizard is keeping still."), ("An ant is carrying!", "An ant is carrying!")],
)  # fmt: skip
def test_sentences(raw, sentence):
    assert to_sentence(raw) == sentence


def test_judged_accuracy_and_mean_score(tmp_path, monkeypatch):
    annotations, videos = animal_kingdom_raw(tmp_path / "raw")
    assert (
        main(
            [
                "animal_kingdom",
                "--annotations",
                str(annotations),
                "--videos",
                str(videos),
                "--root",
                str(tmp_path / "root"),
            ]
        )
        == 0
    )
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(tmp_path / "root"))
    answers = {
        "AAA1": "The bird is flying. The fish is swimming.",  # equal to the reference -> yes/5
        "AAA2": "A snake is eating.",  # no/1
    }
    model = ScriptedModel(lambda doc: answers[doc["id"]])
    with judge_server(monkeypatch) as received:
        results = evaluate(["animal_kingdom"], model)
    assert metric(results, "animal_kingdom", "accuracy") == pytest.approx(50.0)
    assert metric(results, "animal_kingdom", "mean_score") == pytest.approx(3.0)
    assert metric(results, "animal_kingdom", "judge_failures") == 0
    assert model.prompts == [QUESTION, QUESTION] and len(received) == 2
    assert any(
        "Correct Answer: The bird is flying. The fish is swimming." in r.body["messages"][-1]["content"]
        for r in received
    )
