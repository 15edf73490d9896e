"""Open-ended video QA (MSVD-QA, MSRVTT-QA): prompt, visual and the record the judge reads.

The prompt is the question alone, as LLaMA-VID's evaluation used it; the ``llamavid`` backend adds
``<image>\\n`` and the ``vicuna_v1`` conversation template itself.
"""

from __future__ import annotations

from typing import Any

from llamavid_eval.core.paths import resolve_video
from llamavid_eval.core.records import qa_record
from llamavid_eval.tasks.common.judged import judged_results


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    return [resolve_video(doc["video"])]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any] | None]:
    """The item's record (naming its video) for the judge; judging happens once per task, in the aggregation."""
    return judged_results(qa_record(doc["id"], doc["question"], doc["answer"], results[0]), doc["video"])
