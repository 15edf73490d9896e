"""Hooks of the ``llamavid_demo`` task: synthetic one-word video QA scored by exact match, offline.

The verdict comes from the ``exact`` judge of ``judges`` (words of the reference found in the
prediction, case/punctuation-insensitive) - never an LLM, whatever ``LLAMAVID_JUDGE`` says, so the
demo runs without network and its numbers are not mistaken for judged ones. On top, a prediction
naming more than one word of the question's answer set is wrong (hedging such as "red or blue" must
not beat chance). Metrics are 0-100: ``accuracy`` and ``accuracy_<question type>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamavid_eval.core.outputs import CI_PARTS
from llamavid_eval.core.records import (
    DATA_ROOT_ENV,
    DatasetNotPreparedError,
    data_root,
    resolve_video,
    scored_results,
    split_file,
)
from llamavid_eval.core.scores import interval_values, mean_interval
from llamavid_eval.judges.backends.exact import ExactMatchJudge, words
from llamavid_eval.judges.base import JudgeRequest
from llamavid_eval.tasks.common.local_task import LocalVideoTask
from llamavid_eval.tasks.llamavid_demo.scenes import ANSWER_SUFFIX, QUESTIONS

FAMILY = "llamavid_demo"
Record = dict[str, Any]
SCORE_KEY = "item_value"
"""Each record's 0/100 (lmms-eval's Stderr_CLT / Stderr_Clustered columns read it)."""
METRICS = ("accuracy", *(f"accuracy_{part}" for part in CI_PARTS), *(f"accuracy_{q}" for q in QUESTIONS))
"""The demo's metrics, ``accuracy`` (its scorer: :func:`score`) first."""


def make_data_command(root: Path | None = None) -> str:
    out = (root or data_root()) / FAMILY
    return f"python -m llamavid_eval.tasks.llamavid_demo.make_data --out {out} --seed 0 --train 400 --test 100"


class DemoTask(LocalVideoTask):
    """``LocalVideoTask`` whose missing-data error names the generator, not ``llamavid_eval.tasks.prepare``."""

    def download(self, dataset_kwargs: dict[str, Any] | None = None) -> None:
        path = split_file(self.DATASET_PATH, self.config.test_split or "test")
        if not path.is_file():
            raise DatasetNotPreparedError(
                f"Demo dataset {path} not found (${DATA_ROOT_ENV}={data_root()}). Generate it (seconds, no "
                f"download) with:\n  {make_data_command()}\n(or set {DATA_ROOT_ENV} to the folder that holds "
                f"{FAMILY}/)"
            )
        super().download(dataset_kwargs)


def video_path(doc: Record) -> str:
    """Absolute path of the doc's video; ``video`` is relative to the data root, as for every task."""
    try:
        return resolve_video(doc["video"])
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error} For the demo data: {make_data_command()}") from None


def doc_to_visual(doc: Record) -> list[str]:
    return [video_path(doc)]


def doc_to_text(doc: Record, lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """Question + the one-word instruction, exactly the training prompt (backend adds ``<image>``)."""
    return f"{doc['question']}{ANSWER_SUFFIX}"


def doc_to_target(doc: Record) -> str:
    return doc["answer"]


def process_results(doc: Record, results: list[str]) -> dict[str, Record | None]:
    """The record under ``accuracy`` (naming its video); the scorer computes every metric from it (and the
    logged samples keep it)."""
    record = {
        "id": doc["id"],
        "question": doc["question"],
        "answer": doc["answer"],
        "prediction": results[0],
        "question_type": doc["question_type"],
        "choices": list(doc["choices"]),
        "video": doc["video"],
    }
    return scored_results(record, METRICS)


def mark(records: Sequence[Record]) -> list[bool]:
    """Exact-match verdict per record (through the ``exact`` judge), hedged answers counted wrong.

    The verdict is also written into the record, so logged samples show why an item counted."""
    judge = ExactMatchJudge()
    judgements = judge.judge_many([JudgeRequest(r["question"], r["answer"], r["prediction"]) for r in records])
    verdicts = []
    for record, judgement in zip(records, judgements, strict=True):
        named = set(words(record["prediction"])) & {c.casefold() for c in record["choices"]}
        hedged = len(named) > 1
        correct = bool(judgement.verdict) and not hedged
        record.update(correct=correct, hedged=hedged, judge=judge.name, **{SCORE_KEY: 100.0 * correct})
        verdicts.append(correct)
    return verdicts


def score(records: Sequence[Record], task: Any) -> float:
    """Aggregation of ``accuracy``: exact-match accuracy (0-100) with its interval, and per question type (nan
    when none was asked), kept on ``task.values``."""
    values = [100.0 * correct for correct in mark(records)]
    task.values = interval_values("accuracy", mean_interval(values, [str(r["video"]) for r in records]))
    for qtype in QUESTIONS:
        typed = [v for r, v in zip(records, values, strict=True) if r["question_type"] == qtype]
        task.values[f"accuracy_{qtype}"] = sum(typed) / len(typed) if typed else float("nan")
    return task.values["accuracy"]
