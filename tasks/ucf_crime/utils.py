"""Hooks for ``ucf_crime`` (multiple choice, mapped answers) and ``ucf_crime_judged`` (the study's protocol).

fps is not a task setting: the ``llamavid`` backend samples frames (``--model_args ...,fps=1`` or ``fps=6``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import Dataset
from loguru import logger

from llamavid_eval.core.outputs import CI_PARTS
from llamavid_eval.core.records import qa_record, resolve_video, scored_results
from llamavid_eval.core.scores import interval_values, mean_interval
from llamavid_eval.core.ucf import CLASSES, NORMAL, UNMAPPED
from llamavid_eval.tasks.common.local_task import judged_results
from llamavid_eval.tasks.ucf_crime import confusion
from llamavid_eval.tasks.ucf_crime.labels import (
    JUDGED_NAMES,
    JUDGED_PROMPT,
    MC_PROMPT,
    NOT_IN_JUDGED_PROMPT,
    map_answer,
    mc_answer,
)

Record = dict[str, Any]
SCORE_KEY = "item_value"
"""Each record's accuracy (0/100): lmms-eval's Stderr_CLT / Stderr_Clustered columns read it."""
PER_CLASS = tuple(f"acc_{c.lower()}" for c in CLASSES)
METRICS = (
    "accuracy",
    *(f"accuracy_{part}" for part in CI_PARTS),
    "macro_accuracy",
    "binary_accuracy",
    *(f"binary_accuracy_{part}" for part in CI_PARTS),
    "unmapped",
    *PER_CLASS,
)
"""The metrics of ``ucf_crime``, ``accuracy`` (its scorer: :func:`score`) first."""


def doc_to_visual(doc: Record) -> list[str]:
    return [resolve_video(doc["video"])]


def doc_to_text(doc: Record) -> str:
    return MC_PROMPT


def doc_to_target(doc: Record) -> str:
    return mc_answer(doc["label"])


def process_results(doc: Record, results: list[str]) -> dict[str, Record | None]:
    """The ``{id, gold, pred, prediction, video}`` record under ``accuracy`` (every metric is computed from it)."""
    record = {"id": doc["id"], "gold": doc["label"], "pred": map_answer(results[0]), "prediction": results[0]}
    return scored_results({**record, "video": doc["video"]}, METRICS)


def _side(cls: str) -> bool | None:
    """Anomaly (False) or Normal (True); UNMAPPED is on neither side."""
    return None if cls == UNMAPPED else cls == NORMAL


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def metric_values(records: Sequence[Record]) -> dict[str, float]:
    """Every ``ucf_crime`` metric of ``records``: accuracy and binary accuracy (Anomaly vs Normal; UNMAPPED is on
    neither side) with their intervals, the mean of the per-class accuracies over the classes present, unmapped
    answers, and each class's accuracy (nan when the split has none of it)."""
    videos = [str(r["video"]) for r in records]
    correct = [100.0 * (r["pred"] == r["gold"]) for r in records]
    binary = [100.0 * (_side(r["pred"]) == _side(r["gold"])) for r in records]
    per_class = {cls: _mean([v for r, v in zip(records, correct, strict=True) if r["gold"] == cls]) for cls in CLASSES}
    present = [value for cls, value in per_class.items() if any(r["gold"] == cls for r in records)]
    return {
        **interval_values("accuracy", mean_interval(correct, videos)),
        **interval_values("binary_accuracy", mean_interval(binary, videos)),
        "macro_accuracy": _mean(present),
        "unmapped": float(sum(r["pred"] == UNMAPPED for r in records)),
        **{f"acc_{cls.lower()}": value for cls, value in per_class.items()},
    }


def score(records: Sequence[Record], task: Any, args: Any = None) -> float:
    """Aggregation of ``accuracy``: every metric at once (kept on ``task.values``), and the confusion matrix
    (see ``tasks/ucf_crime/confusion.py`` for where it is written)."""
    name = getattr(task.config, "task", "ucf_crime")
    path = confusion.write(records, name, args)
    logger.info(
        f"[{name}] confusion matrix (rows gold, columns predicted){f' written to {path}' if path else ''}:\n"
        f"{confusion.to_csv(confusion.confusion_matrix(records))}"
    )
    for record in records:
        record[SCORE_KEY] = 100.0 * (record["pred"] == record["gold"])
    task.values = metric_values(records)
    return task.values["accuracy"]


def judged_process_docs(dataset: Dataset) -> Dataset:
    """Keep the classes the study's prompt offers; every kept doc carries how many were left out."""
    kept = dataset.filter(lambda d: d["label"] in JUDGED_NAMES)
    excluded = len(dataset) - len(kept)
    logger.info(
        f"[ucf_crime_judged] {excluded} test videos of classes not in the prompt ({', '.join(NOT_IN_JUDGED_PROMPT)}) "
        f"excluded; {len(kept)} kept"
    )
    return kept.map(lambda d: {"excluded_videos": excluded})


def judged_doc_to_text(doc: Record) -> str:
    return JUDGED_PROMPT


def judged_doc_to_target(doc: Record) -> str:
    return JUDGED_NAMES[doc["label"]]


def judged_process_results(doc: Record, results: list[str]) -> dict[str, Any]:
    """The judged record (``tasks/common/local_task.py``) and the count of excluded videos."""
    record = qa_record(doc["id"], JUDGED_PROMPT, JUDGED_NAMES[doc["label"]], results[0])
    return {**judged_results(record, doc["video"]), "excluded_videos": doc["excluded_videos"]}


def excluded_videos(counts: Sequence[int]) -> int:
    """Test videos left out because their class is not among the prompt's 11 categories."""
    return counts[0]
