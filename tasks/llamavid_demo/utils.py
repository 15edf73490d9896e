"""Hooks of the ``llamavid_demo`` task: synthetic one-word video QA scored by exact match, offline.

The verdict comes from the ``exact`` judge of ``judges`` (words of the reference found in the
prediction, case/punctuation-insensitive) - never an LLM, whatever ``LLAMAVID_JUDGE`` says, so the
demo runs without network and its numbers are not mistaken for judged ones. On top, a prediction
naming more than one word of the question's answer set is wrong (hedging such as "red or blue" must
not beat chance). Metrics are 0-100: ``accuracy`` and ``accuracy_<question type>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llamavid_eval.judges import JudgeRequest, get_judge
from llamavid_eval.judges.backends.exact import words
from llamavid_eval.tasks.common import intervals
from llamavid_eval.tasks.common.local_task import LocalVideoTask
from llamavid_eval.tasks.llamavid_demo.scenes import ANSWER_SUFFIX, QUESTIONS

from llamavid_eval.core.paths import DATA_ROOT_ENV, DatasetNotPreparedError, data_root, resolve_video, split_file

FAMILY = "llamavid_demo"
EXACT = {"judge": "exact"}
Record = dict[str, Any]


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


def process_results(doc: Record, results: list[str]) -> dict[str, Record]:
    """The record under every metric key (one copy each, naming the video); the aggregations score it
    (and the logs keep it)."""
    record = {
        "id": doc["id"],
        "question": doc["question"],
        "answer": doc["answer"],
        "prediction": results[0],
        "question_type": doc["question_type"],
        "choices": list(doc["choices"]),
    }
    return intervals.metric_records(record, doc["video"], METRICS)


def score(records: Sequence[Record]) -> list[bool]:
    """Exact-match verdict per record (through the ``exact`` judge), hedged answers counted wrong.

    The verdict is also written into the record, so logged samples show why an item counted."""
    judge = get_judge(EXACT, overrides={"backend": "exact"})
    judgements = judge.judge_many([JudgeRequest(r["question"], r["answer"], r["prediction"]) for r in records])
    verdicts = []
    for record, judgement in zip(records, judgements, strict=True):
        named = set(words(record["prediction"])) & {c.casefold() for c in record["choices"]}
        hedged = len(named) > 1
        correct = bool(judgement.verdict) and not hedged
        record.update(correct=correct, hedged=hedged, judge=judge.name)
        verdicts.append(correct)
    return verdicts


def _values(records: Sequence[Record], task_config: Any = None, qtype: str | None = None) -> list[float | None]:
    """100 per correct answer, 0 per wrong one; None for questions not of type ``qtype``."""
    return [
        100.0 * correct if qtype is None or r["question_type"] == qtype else None
        for r, correct in zip(records, score(records), strict=True)
    ]


def accuracy(records: Sequence[Record]) -> float:
    """Exact-match accuracy (0-100) over all questions."""
    return intervals.mark_mean(records, _values(records))


def _type_accuracy(qtype: str) -> Callable[[Sequence[Record]], float]:
    def type_accuracy(records: Sequence[Record]) -> float:
        return intervals.mark_mean(records, _values(records, qtype=qtype))

    type_accuracy.__doc__ = f"Exact-match accuracy (0-100) on {qtype!r} questions (nan when none were asked)."
    type_accuracy.__name__ = f"accuracy_{qtype}"
    return type_accuracy


PER_TYPE = {f"accuracy_{qtype}": _type_accuracy(qtype) for qtype in QUESTIONS}
globals().update(PER_TYPE)  # the YAML names them: !function utils.accuracy_colour, ...
INTERVALS = intervals.ci_aggregations("accuracy", _values)
globals().update(INTERVALS)  # !function utils.accuracy_ci_low, ...
METRICS = ("accuracy", *PER_TYPE, *INTERVALS)
