"""Re-score logged lmms-eval samples with another judge, without re-running the video model.

Input: an lmms-eval output folder written with ``--log_samples`` (lmms-eval 0.7.3 writes
``<output_path>/<model>/<date>_<time>_samples_<task>.jsonl`` plus ``<date>_<time>_results.json``;
the ``<model>`` level is absent when the model has no name argument) or one samples file. Each
line holds ``doc_id``, ``target``, the model's ``filtered_resps`` and whatever the task's
``process_results`` returned under each metric key. Contract with the tasks: a judged metric's value
is a record with at least ``question``, ``answer``, ``prediction`` (usually ``id``) - any such dict
in a line is judged. Identical records under several metric keys of one line are judged once.

Output, per run (folder + timestamp), beside the input or under ``--out``:
``<date>_<time>_rejudge_<judge>_summary.json`` (metrics per task) and
``<date>_<time>_rejudge_<judge>_items.jsonl`` (one judgement per item, the input of ``agree``).
These names never match lmms-eval's own ``*_samples_*`` / ``*_results.json`` patterns.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamavid_eval.core.outputs import (
    SamplesFile,
    find_samples,
    is_qa_record,
    iter_samples,
    json_safe,
    judge_label,
    run_results,
)
from llamavid_eval.core.records import QA_TEXT_KEYS, VIDEO_KEY
from llamavid_eval.core.scores import common_reason
from llamavid_eval.core.stats import Interval
from llamavid_eval.judges.base import Judge, Judgement, JudgeRequest
from llamavid_eval.judges.summary import scored, summary

log = logging.getLogger("judges")

ITEMS_SUFFIX = "_items.jsonl"


@dataclass
class Item:
    """One judgeable record of a logged sample."""

    task: str
    date_id: str
    model_dir: str
    doc_id: Any
    id: Any
    video: str | None  # the video the item is about (clusters for intervals), when the record names it
    request: JudgeRequest
    metrics: list[str] = field(default_factory=list)


def read_items(sf: SamplesFile, model_dir: str = "") -> list[Item]:
    """The judgeable records in one samples file (lines that hold none are skipped, e.g. MCQ tasks)."""
    items: list[Item] = []
    for sample in iter_samples(sf.path):
        seen: dict[tuple[Any, ...], Item] = {}
        for metric, value in sample.items():
            if not is_qa_record(value):
                continue
            req = JudgeRequest(*(str(value[k]) for k in QA_TEXT_KEYS))
            ident = value.get("id", sample.get("doc_id"))
            key = (json.dumps(ident, default=str), req)
            if key not in seen:
                video = value.get(VIDEO_KEY)
                seen[key] = Item(
                    sf.task,
                    sf.date_id,
                    model_dir,
                    sample.get("doc_id"),
                    ident,
                    None if video is None else str(video),
                    req,
                )
                items.append(seen[key])
            seen[key].metrics.append(metric)
    return items


def rejudge(
    source: str | Path,
    judge: Judge,
    *,
    out: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Judge every record under ``source``; write summary + items files per run; return an overview."""
    source = Path(source)
    root = source if source.is_dir() else source.parent
    files = [f for f in find_samples(source) if not tasks or f.task in tasks]
    if not files:
        raise FileNotFoundError(f"none of the tasks {list(tasks or [])} have samples under {source}")
    runs: dict[tuple[Path, str], list[SamplesFile]] = defaultdict(list)
    for f in files:
        runs[(f.path.parent, f.date_id)].append(f)
    run_items: dict[tuple[Path, str], list[Item]] = {}
    for (folder, date_id), group in runs.items():
        model_dir = folder.relative_to(root).as_posix() if folder != root else ""
        run_items[(folder, date_id)] = [it for f in group for it in read_items(f, model_dir)]
    everything = [it for items in run_items.values() for it in items]
    if not everything:
        raise ValueError(
            f"no judgeable records under {source}: no metric value is a dict with "
            f"{', '.join(QA_TEXT_KEYS)} (is this a judged task?)"
        )
    judgements = judge.judge_many([it.request for it in everything])  # one call: full concurrency, one cache pass
    by_item = dict(zip(map(id, everything), judgements, strict=True))

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", judge.name).strip("-")
    errors = [j.error for j in judgements if j.failed]
    overview: dict[str, Any] = {
        "judge": judge.name,
        "runs": [],
        "failure_reason": common_reason(errors),
        "failures": _failures_by_task(everything, judgements),
    }
    server_messages = dict(getattr(judge, "server_messages", {}))  # each long server error once, items cite it
    for (folder, date_id), items in run_items.items():
        if not items:
            continue
        target = Path(out) / folder.relative_to(root) if out is not None else folder
        target.mkdir(parents=True, exist_ok=True)
        stem = f"{date_id}_rejudge_{slug}" if date_id else f"rejudge_{slug}"
        rows = [_row(it, by_item[id(it)]) for it in items]
        per_task: dict[str, list[Item]] = defaultdict(list)
        for it in items:
            per_task[it.task].append(it)
        summary = {
            "results": {
                task: task_summary(task_items, [by_item[id(it)] for it in task_items])
                for task, task_items in per_task.items()
            },  # fmt: skip
            "original_results": run_results(folder, date_id, list(per_task)),
            "rejudge": {
                "judge": judge.name,
                "settings": settings or {},
                "server_messages": server_messages,
                "prompt_version": getattr(getattr(judge, "prompt", None), "version", None),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "sources": sorted(f.path.name for f in runs[(folder, date_id)]),
                "model_dir": items[0].model_dir,
                "date_id": date_id,
            },
        }
        summary_path = target / f"{stem}_summary.json"
        items_path = target / f"{stem}{ITEMS_SUFFIX}"
        summary_path.write_text(
            json.dumps(json_safe(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
        )
        _write_jsonl(items_path, rows)
        overview["runs"].append({"summary": str(summary_path), "items": str(items_path), **summary})
    return overview


def _failures_by_task(items: list[Item], judgements: list[Judgement]) -> dict[str, dict[str, Any]]:
    """Per task over every run: failed, total and the most common reason (the budget applies per task)."""
    by_task: dict[str, list[Judgement]] = defaultdict(list)
    for it, j in zip(items, judgements, strict=True):
        by_task[it.task].append(j)
    return {
        task: {
            "failed": sum(j.failed for j in js),
            "total": len(js),
            "reason": common_reason(j.error for j in js if j.failed),
        }
        for task, js in by_task.items()
    }


def _row(it: Item, j: Judgement) -> dict[str, Any]:
    return {
        "task": it.task,
        "date_id": it.date_id,
        "model_dir": it.model_dir,
        "doc_id": it.doc_id,
        "id": it.id,
        **({VIDEO_KEY: it.video} if it.video is not None else {}),
        "metrics": it.metrics,
        "question": it.request.question,
        "answer": it.request.answer,
        "prediction": it.request.prediction,
        "verdict": j.verdict,
        "score": j.score,
        "failed": j.failed,
        "error": j.error,
        "cached": j.cached,
        "raw": j.raw,
        "backend": j.backend,
        "model": j.model,
        "judge": judge_label(j.backend, j.model),
        "prompt_version": j.metadata.get("prompt_version"),  # the exact judge has none
        "metadata": j.metadata,
    }


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)  # readers never see half a file


def task_summary(items: list[Item], judgements: list[Judgement]) -> dict[str, Any]:
    """A task's :func:`~llamavid_eval.judges.summary.summarize` figures and the 95% cluster-bootstrap interval
    (by video where the records name one) of the % judged a match, from one
    :func:`llamavid_eval.core.scores.judged_scores` (failures left out)."""
    scores, js = scored(judgements, [it.video or f"doc:{it.doc_id}" for it in items])
    return {**summary(scores, js), "accuracy_ci": scores.intervals["accuracy"].to_dict()}


def format_overview(overview: dict[str, Any]) -> str:
    """A Markdown table of the re-judged metrics."""
    lines = [
        f"Judge: {overview['judge']}",
        "",
        "| run | task | n | accuracy (95% CI) | mean score | failures |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for run in overview["runs"]:
        name = "/".join(p for p in (run["rejudge"]["model_dir"], run["rejudge"]["date_id"]) if p) or "."
        for task, m in run["results"].items():
            lines.append(
                f"| {name} | {task} | {m['n']} | {_accuracy_text(m)} | {_fmt(m['mean_score'], 3)} | {m['failures']} |"
            )
    lines.append("")
    methods = {
        run_m["accuracy_ci"]["method"]
        for run in overview["runs"]
        for run_m in run["results"].values()
        if run_m.get("accuracy_ci")
    }
    lines += [f"Interval: {method}." for method in sorted(methods)]
    lines += [f"wrote {run['summary']}\nwrote {run['items']}" for run in overview["runs"]]
    return "\n".join(lines)


def _accuracy_text(metrics: dict[str, Any]) -> str:
    ci = metrics.get("accuracy_ci")
    if metrics["accuracy"] is None or not ci:
        return _fmt(metrics["accuracy"], 2)
    return Interval.from_dict(ci).short(2)


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
