"""What our records look like: the training conversation, the scored records tasks log, their keys.

Every record that names a video (prepared splits, demo data, training conversations) gives it as a
path relative to the data root (``$LLAMAVID_DATA_ROOT``), resolved by
:func:`llamavid_eval.core.paths.resolve_video`; a prepared folder moves with one variable.
"""

from __future__ import annotations

from collections.abc import Sequence
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
