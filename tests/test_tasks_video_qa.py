"""msvd_qa / msrvtt_qa (+ _mini) through lmms-eval's evaluator with a scripted model and the real judge
layer talking to a deterministic judge on 127.0.0.1."""

from __future__ import annotations

import random

import pytest
import yaml
from datasets import Dataset
from test_tasks_support import FAIL, ScriptedModel, evaluate, judge_server, metric, video_qa_raw

from llamavid_eval.core.records import DatasetNotPreparedError
from llamavid_eval.tasks import TASKS_DIR
from llamavid_eval.tasks.common.local_task import seeded_subset
from llamavid_eval.tasks.prepare import main

# id -> scripted answer, and what the test judge makes of it against the reference
ANSWERS = {"0": "dancing", "1": "a woman", "2": "blue", "3": FAIL}  # yes/5, yes/4, no/1, failure


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    qa, videos = video_qa_raw(tmp_path / "raw")
    for family in ("msvd_qa", "msrvtt_qa"):
        assert main([family, "--qa", str(qa), "--videos", str(videos), "--root", str(tmp_path / "root")]) == 0
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(tmp_path / "root"))
    return tmp_path / "root"


@pytest.mark.parametrize("task", ["msvd_qa", "msrvtt_qa", "msvd_qa_mini"])
def test_judged_metrics_match_hand_computed(prepared, monkeypatch, task):
    family = task.removesuffix("_mini")
    model = ScriptedModel(lambda doc: ANSWERS[doc["id"]])
    with judge_server(monkeypatch) as received:
        results = evaluate([task], model)
    assert metric(results, task, "accuracy") == pytest.approx(100 * 2 / 3)  # 2 yes of 3 judged
    assert metric(results, task, "mean_score") == pytest.approx((5 + 4 + 1) / 3)
    assert metric(results, task, "judge_failures") == 1
    assert len(received) == 4  # one judge call per item although three metrics aggregate them
    assert model.prompts == [
        "what is the man doing?",
        "who is singing?",
        "what color is the car?",
        "what animal is shown?",
    ]
    assert model.visuals[2] == [str(prepared / family / "videos" / "vid2.avi")]
    sample = results["samples"][task][1]["accuracy"]
    assert {k: sample[k] for k in ("id", "question", "answer", "prediction")} == {
        "id": "1", "question": "who is singing?", "answer": "woman", "prediction": "a woman"
    }  # fmt: skip
    assert (sample["judgement"]["verdict"], sample["judgement"]["score"]) == (True, 4)


def test_mini_subset_is_fixed_and_documented():
    config = yaml.safe_load((TASKS_DIR / "msvd_qa" / "msvd_qa_mini.yaml").read_text())
    assert config["dataset_kwargs"] == {"subset_size": 500, "subset_seed": 1234}
    data = Dataset.from_list([{"i": i} for i in range(20)])
    picked = seeded_subset(data, 5, 1234)["i"]
    assert picked == sorted(random.Random(1234).sample(range(20), 5)) and picked == seeded_subset(data, 5, 1234)["i"]
    assert len(seeded_subset(data, 50, 1234)) == 20


def test_missing_prepared_dataset_says_which_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("LLAMAVID_JUDGE", "exact")
    with pytest.raises(DatasetNotPreparedError, match=r"llamavid prepare msrvtt_qa --help"):
        evaluate(["msrvtt_qa"], ScriptedModel(lambda doc: ""))


def test_missing_video_names_path_and_env_var(prepared, monkeypatch):
    monkeypatch.setenv("LLAMAVID_JUDGE", "exact")
    (prepared / "msvd_qa" / "videos" / "vid1.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=r"msvd_qa/videos/vid1.mp4.*LLAMAVID_DATA_ROOT"):
        evaluate(["msvd_qa"], ScriptedModel(lambda doc: ""))


def test_bad_judge_setting_fails_before_inference(prepared, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the YAML's default judge is openai:gpt-3.5-turbo
    model = ScriptedModel(lambda doc: "")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        evaluate(["msvd_qa"], model)
    assert model.prompts == []
