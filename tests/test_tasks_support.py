"""Helpers (no tests) for the task and prepare tests: raw dataset layouts with tiny real MP4s, a
scripted lmms-eval model, a deterministic OpenAI-compatible judge on 127.0.0.1, and one evaluator call."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from lmms_eval.api.model import lmms
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager
from media import write_video

from llamavid_eval.judges.testing import Call, FakeChatServer, Response, reply
from llamavid_eval.tasks import TASKS_DIR

FAIL = "JUDGE_FAIL"  # a prediction containing this gets an unparseable judge reply


def tiny_video(path: Path) -> Path:
    """A 4-frame 32x32 MP4 (decodable, so the layout is realistic)."""
    return write_video(path, np.full((4, 32, 32, 3), 128, dtype=np.uint8))


def judge_reply(answer: str, prediction: str) -> str:
    """The test judge's rule: equal -> yes/5, contains -> yes/4, else no/1; FAIL -> not a verdict."""
    a, p = answer.strip().lower(), prediction.strip().lower()
    if FAIL.lower() in p:
        return "I would rather not say."
    if a == p:
        return "{'pred': 'yes', 'score': 5}"
    return "{'pred': 'yes', 'score': 4}" if a in p else "{'pred': 'no', 'score': 1}"


def _scripted_judge(call: Call) -> Response:
    return reply(judge_reply(call.field("Correct Answer"), call.field("Predicted Answer")))


@contextmanager
def judge_server(monkeypatch) -> Iterator[list[Call]]:
    """Serve the test judge (llamavid_eval.judges.testing's loopback server) and point the judge layer at it.

    Yields the server's list of received calls (``call.body`` is the request JSON). The tests' few items
    include one judge failure on purpose (1 of 4 to 6), so the failure budget is raised to 0.5 here.
    """
    with FakeChatServer(_scripted_judge) as server:
        env = {"LLAMAVID_JUDGE": "local", "LLAMAVID_JUDGE_BASE_URL": server.url, "LLAMAVID_JUDGE_CACHE": "off",
               "LLAMAVID_JUDGE_PARSE_RETRIES": "0", "LLAMAVID_JUDGE_MAX_RETRIES": "0",
               "LLAMAVID_JUDGE_MAX_FAILURE_RATE": "0.5", "LLAMAVID_JUDGE_EXAM": "0"}  # fmt: skip
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield server.calls


class ScriptedModel(lmms):
    """Answers with ``answer(doc)``; resolves every visual so missing videos surface as in a real run."""

    def __init__(self, answer: Callable[[dict[str, Any]], str]) -> None:
        super().__init__()
        self.answer = answer
        self.prompts: list[str] = []
        self.visuals: list[list[str]] = []

    def generate_until(self, requests) -> list[str]:
        replies = []
        for context, _gen_kwargs, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            doc = self.task_dict[task][split][doc_id]
            self.visuals.append(doc_to_visual(doc))
            self.prompts.append(context)
            replies.append(self.answer(doc))
        return replies

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError


_TASK_MANAGER: list[TaskManager] = []


def evaluate(tasks: list[str], model: ScriptedModel) -> dict[str, Any]:
    """``simple_evaluate`` over our tasks folder only (fast: lmms-eval's own tasks are not indexed)."""
    if not _TASK_MANAGER:
        _TASK_MANAGER.append(TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
    return simple_evaluate(model=model, tasks=tasks, task_manager=_TASK_MANAGER[0], bootstrap_iters=0, log_samples=True)


def metric(results: dict[str, Any], task: str, name: str) -> Any:
    return results["results"][task][f"{name},none"]


# --- raw public layouts -------------------------------------------------------------------------

VIDEO_QA = [
    {"video_id": "vid1", "question": "what is the man doing?", "id": 0, "answer": "dancing"},
    {"video_id": "vid1", "question": "who is singing?", "id": 1, "answer": "woman"},
    {"video_id": "vid2", "question": "what color is the car?", "id": 2, "answer": "red"},
    {"video_id": "vid2", "question": "what animal is shown?", "id": 3, "answer": "cat"},
    {"video_id": "vid3", "question": "where is this?", "id": 4, "answer": "beach"},  # no video: skipped
]


def video_qa_raw(base: Path) -> tuple[Path, Path]:
    """LLaMA-VID's MSVD/MSRVTT layout: QA JSON + videos named by video_id (.mp4 and .avi)."""
    tiny_video(base / "videos" / "vid1.mp4")
    tiny_video(base / "videos" / "vid2.avi")
    (base / "test_qa.json").write_text(json.dumps(VIDEO_QA))
    return base / "test_qa.json", base / "videos"


UCF_TEST = {  # file -> folder, as in Anomaly_Test.txt
    "Abuse028_x264.mp4": "Abuse", "Abuse030_x264.mp4": "Abuse", "Arrest001_x264.mp4": "Arrest",
    "RoadAccidents001_x264.mp4": "RoadAccidents", "Shoplifting005_x264.mp4": "Shoplifting",
    "Stealing019_x264.mp4": "Stealing", "Normal_Videos_003_x264.mp4": "Testing_Normal_Videos_Anomaly",
    "Normal_Videos_006_x264.mp4": "Testing_Normal_Videos_Anomaly",
}  # fmt: skip
UCF_TRAIN = {"Abuse001_x264.mp4": "Abuse", "Normal_Videos001_x264.mp4": "Training_Normal_Videos_Anomaly"}


def ucf_raw(base: Path) -> Path:
    """UCF_Crimes layout: per-class folders in parts, normal folders, split lists, temporal annotations."""
    for name, folder in {**UCF_TEST, **UCF_TRAIN}.items():
        part = "" if folder.endswith("Anomaly") else "Anomaly-Videos-Part-1/"
        tiny_video(base / "Videos" / f"{part}{folder}" / name)
    splits = base / "Anomaly_Detection_splits"
    splits.mkdir()
    (splits / "Anomaly_Test.txt").write_text("".join(f"{f}/{n}\n" for n, f in UCF_TEST.items()))
    (splits / "Anomaly_Train.txt").write_text("".join(f"{f}/{n}\n" for n, f in UCF_TRAIN.items()))
    temporal = [f"{n}  {'Normal' if n.startswith('Normal') else f}  10  20  -1  -1\n" for n, f in UCF_TEST.items()]
    (base / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text("".join(temporal))
    return base


AK_TEST = (
    "AAA1 0.0 2.0##The bird is flying.\nAAA2 0.0 1.0##lizard is keeping still\nAAA1 2.0 3.5##The fish is swimming\n"
)
AK_TRAIN = "BBB1 0.0 2.0##The dog is running.\nBBB1 1.0 3.0##The cat is sleeping.\nBBB2 0 1##frog is jumping\n"


def animal_kingdom_raw(base: Path) -> tuple[Path, Path]:
    """Animal Kingdom video grounding: train.txt / test.txt (Charades-STA style) + <code>.mp4."""
    for code in ("AAA1", "AAA2", "BBB1"):  # BBB2 has no video: skipped
        tiny_video(base / "video" / f"{code}.mp4")
    (base / "annotation").mkdir()
    (base / "annotation" / "test.txt").write_text(AK_TEST)
    (base / "annotation" / "train.txt").write_text(AK_TRAIN)
    return base / "annotation", base / "video"
