"""Per-sample records from lmms-eval ``*_samples_<task>.jsonl`` files.

Tasks put their per-item record under each metric key of a logged sample (``logged_sample.update(
metrics)`` in lmms-eval's evaluator). Two shapes matter here (contracts with ``tasks/``):
``ucf_crime`` -> ``{"gold": class, "pred": class | "UNMAPPED"}``; judged tasks -> ``{"question",
"answer", "prediction", "verdict", "score", "failed", "judge"}``, where the judgement may also sit
nested under ``"judgement"`` (``judges.Judgement.to_dict()``: backend, model, verdict, score, failed),
as ``tasks/common/judged.py`` writes it. ``judges rejudge`` items files (one flat record per line, with
``task`` and ``doc_id``) are read the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Keys lmms-eval itself writes into a logged sample; everything else came from process_results.
_HARNESS_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "token_counts", "doc_hash", "input", "input_media"}
_PEEK_LINES = 50


def iter_samples(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Logged samples in file order; a truncated or corrupt line (crashed run) is skipped, not fatal."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError:
        return
    with handle:
        for index, line in enumerate(handle):
            if limit is not None and index >= limit:
                return
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict):
                yield item


def metric_records(sample: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dict-valued metric entries of one logged sample (metric key -> record)."""
    return {k: v for k, v in sample.items() if k not in _HARNESS_KEYS and isinstance(v, dict)}


def ucf_pairs(path: Path) -> list[tuple[str, str]]:
    """(gold, pred) class pairs of a ``ucf_crime`` samples file, one per item."""
    pairs = []
    for sample in iter_samples(path):
        for record in metric_records(sample).values():
            if "gold" in record and "pred" in record:
                pairs.append((str(record["gold"]), str(record["pred"])))
                break
    return pairs


def judge_label(backend: Any, model: Any) -> str:
    """Same naming as ``llamavid_eval.judges.summary.judge_label``: ``backend:model``, ``exact-match`` for the matcher."""
    return "exact-match" if backend == "exact" else f"{backend}:{model}"


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """Flat judgement record: nested ``judgement`` lifted up, ``judge`` named."""
    nested = record.get("judgement")
    flat = {**record, **nested} if isinstance(nested, dict) else dict(record)
    if not flat.get("judge") and (flat.get("backend") or flat.get("model")):
        flat["judge"] = judge_label(flat.get("backend"), flat.get("model"))
    return flat


def is_judgement(record: dict[str, Any]) -> bool:
    return "prediction" in record and any(k in record for k in ("verdict", "failed", "score"))


def _judged_records(sample: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(metric key, flat judgement) pairs of a samples line, or the line itself for an items file."""
    if is_judgement(sample) and "doc_id" in sample:
        return [("", normalize(sample))]
    flat = [(key, normalize(record)) for key, record in metric_records(sample).items()]
    return [(key, record) for key, record in flat if is_judgement(record)]


def judgements(path: Path, task: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """judge name -> item id -> judgement record; items are keyed by ``doc_id`` (stable across runs)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for position, sample in enumerate(iter_samples(path)):
        if task is not None and sample.get("task", task) != task:
            continue
        item_id = str(sample.get("doc_id", position))
        for key, record in _judged_records(sample):
            judge = str(record.get("judge") or key or "judge")
            out.setdefault(judge, {}).setdefault(item_id, record)
    return out


def judge_names(path: Path) -> set[str]:
    """Judges named in the first lines of a samples file (enough: one run uses one judge per task)."""
    names = set()
    for sample in iter_samples(path, limit=_PEEK_LINES):
        for _, record in _judged_records(sample):
            if isinstance(record.get("judge"), str) and record["judge"]:
                names.add(record["judge"])
    return names


def count_failures(path: Path) -> int | None:
    """Judge failures recorded per item, or None when the records carry no ``failed`` field."""
    seen, failures = False, 0
    for sample in iter_samples(path):
        for _, record in _judged_records(sample)[:1]:
            if "failed" in record:
                seen = True
                failures += bool(record["failed"])
    return failures if seen else None
