"""What the leaderboard needs from logged samples, on top of the one reader (:mod:`llamavid_eval.core.outputs`).

``ucf_crime`` records give (gold, pred) pairs for the confusion plots; judged records give the judge's
name; ``judges rejudge`` items files (one flat record per line, with ``task`` and
``doc_id``) are read the same way as samples files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamavid_eval.core.outputs import iter_samples, judged_records

_PEEK_LINES = 50


def judgements(path: Path, task: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """judge name -> item id -> judgement record; items are keyed by ``doc_id`` (stable across runs)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for position, sample in enumerate(iter_samples(path)):
        if task is not None and sample.get("task", task) != task:
            continue
        item_id = str(sample.get("doc_id", position))
        for key, record in judged_records(sample):
            judge = str(record.get("judge") or key or "judge")
            out.setdefault(judge, {}).setdefault(item_id, record)
    return out


def judge_names(path: Path) -> set[str]:
    """Judges named in the first lines of a samples file (enough: one run uses one judge per task)."""
    names = set()
    for sample in iter_samples(path, limit=_PEEK_LINES):
        for _, record in judged_records(sample):
            if isinstance(record.get("judge"), str) and record["judge"]:
                names.add(record["judge"])
    return names
