"""What our records look like and where they live: the training conversation, the scored records tasks
log, their keys; the prepared splits under the data root.

Every task reads ``$LLAMAVID_DATA_ROOT/<family>/<split>.jsonl`` (:func:`load_split`). Every record
that names a video (prepared splits, demo data, training conversations) gives it as a path relative
to the data root, resolved by :func:`resolve_video` against the same root, so a prepared folder can
be moved or mounted elsewhere by changing one environment variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGE_PLACEHOLDER = "<image>"
"""Where the frames go in a training prompt (the model splices the visual tokens in its place)."""

QA_TEXT_KEYS = ("question", "answer", "prediction")
"""What a judge reads of an open-ended item (and the re-judge command re-reads from logged samples)."""

QA_RECORD_KEYS = ("id", *QA_TEXT_KEYS)
"""An open-ended item as logged by judged tasks."""

CLASSIFICATION_RECORD_KEYS = ("id", "gold", "pred", "prediction")
"""A multiple-choice item (UCF-Crime): gold and mapped predicted class, and the raw prediction."""

VIDEO_KEY = "video"
"""Where a record names the video it is about (relative to the data root): the cluster of its item's intervals."""

JUDGEMENT_KEY = "judgement"
"""Key under which a judged task writes each item's judgement (``Judgement.to_dict()``) into its record."""


def qa_record(doc_id: Any, question: str, answer: str, prediction: str) -> dict[str, Any]:
    """One open-ended item with the keys of :data:`QA_RECORD_KEYS`."""
    return dict(zip(QA_RECORD_KEYS, (doc_id, question, answer, prediction), strict=True))


def scored_results(record: dict[str, Any], metrics: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """What a task's ``process_results`` returns: ``record`` under the first metric (the task's scorer reads it
    and computes every metric, ``tasks/common/local_task.py``), None under the rest: the logged sample holds the
    record once."""
    first, *rest = metrics
    return {first: record, **dict.fromkeys(rest)}


def conversation_record(record_id: str, video: str, question: str, answer: str) -> dict[str, Any]:
    """One LLaVA-format training record (``{"id", "video", "conversations"}``) as the training module reads it.

    ``video`` is relative to the data root; the prompt is ``<image>`` then the question, the reply the answer.
    """
    return {
        "id": record_id,
        "video": video,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


# --- Where prepared datasets and their videos live.
DATA_ROOT_ENV = "LLAMAVID_DATA_ROOT"
DEFAULT_DATA_ROOT = "~/.cache/llamavid-eval/data"


class DatasetNotPreparedError(FileNotFoundError):
    """The prepared split a task needs is missing; the message says which prepare command writes it."""


def data_root() -> Path:
    """The data root: ``$LLAMAVID_DATA_ROOT`` or ``~/.cache/llamavid-eval/data``, made absolute."""
    return Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser().absolute()


def split_file(family: str, split: str, root: Path | None = None) -> Path:
    return (root or data_root()) / family / f"{split}.jsonl"


def load_split(family: str, split: str) -> list[dict[str, Any]]:
    """Read a prepared split; a missing or empty file raises with the command that writes it."""
    path = split_file(family, split)
    hint = (
        f"Run `llamavid prepare {family} --help` to see how to prepare it "
        f"(it writes to ${DATA_ROOT_ENV}, currently {data_root()})."
    )
    if not path.is_file():
        raise DatasetNotPreparedError(f"Prepared dataset {path} not found. {hint}")
    with path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    if not records:
        raise DatasetNotPreparedError(f"Prepared dataset {path} has no records. {hint}")
    return records


def resolve_video(relative: str, root: Path | None = None) -> str:
    """Absolute path of a record's video (relative to the data root: ``root``, else ``$LLAMAVID_DATA_ROOT``).

    The one rule for every record that names a video (tasks, demo, training); raises naming the path
    and where the root came from.
    """
    base = root if root is not None else data_root()
    path = base / relative
    if not path.is_file():
        source = f"the data root {base}" if root is not None else f"${DATA_ROOT_ENV}={base}"
        raise FileNotFoundError(
            f"Video {path} not found ({relative!r} under {source}). "
            f"Point the data root at the folder `llamavid prepare` wrote, or re-run the prepare command."
        )
    return str(path)
