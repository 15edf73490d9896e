"""No verdict counts from an unfit judge unless the user says so: the exam as a gate.

Building a judged task, ``rejudge`` and ``swap`` call :func:`examine` after the preflight: the judge
sits the exam (``judges.exam``) once per judge, model, prompt version and exam version - the report
is kept for the process and on disk next to the verdict cache (only reports without failures: a
failure may be transient and is asked again), and the verdicts themselves are cached anyway - and an
unfit judge stops the run with :class:`JudgeUnfit` before the video model answers. The way out is
another judge or prompt, or ``LLAMAVID_JUDGE_EXAM=0`` / ``--allow-unfit``; the records then say so.

The ``exact`` judge is not examined: exact match is a floor, not a judge (it fails paraphrases by
design), and the demo and tests use it as such; its records say it was not examined and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llamavid_eval.judges.base import Judge
from llamavid_eval.judges.exam import DEFAULT_THRESHOLDS, Thresholds, run_exam, summary_line
from llamavid_eval.judges.exam_data import Exam, load_exam
from llamavid_eval.judges.factory import BACKENDS, JudgeSettings, build_judge, cache_for
from llamavid_eval.judges.preflight import JudgeUnavailable
from llamavid_eval.judges.prompt import load_prompt

log = logging.getLogger("judges")

EXACT_NOTE = "not examined: exact match is a floor, not a judge (it fails paraphrases by design)"
OFF_NOTE = "not examined: the judge exam was switched off (LLAMAVID_JUDGE_EXAM=0)"
EXAM_KEY = "exam"  # the exam record's key in a task's metadata (keys starting with "judge" are judge options)
_REPORTS: dict[str, dict[str, Any]] = {}  # report key -> exam report, for this process


class JudgeUnfit(JudgeUnavailable):
    """The judge failed the exam; the message gives its figures, why it is unfit and the way out."""


def report_key(judge: Judge, exam: Exam) -> str:
    """What an exam report depends on: judge backend, model, prompt version (with any decoding tag the
    backend adds) and exam version."""
    prompt = getattr(judge, "prompt", None)
    payload = [judge.backend, judge.model, prompt.version if prompt is not None else None, exam.version]
    return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()[:24]


def exam_report(
    settings: JudgeSettings,
    *,
    exam: Exam | None = None,
    build: Callable[[JudgeSettings], Judge] = build_judge,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    examples: int = 3,
    fresh: bool = False,
) -> dict[str, Any]:
    """The judge's exam report: remembered (process, then disk) unless ``fresh``, else the judge sits it.
    Building a judge loads nothing (an ``hf`` model loads when it first judges), so a remembered report
    costs no model load."""
    exam = exam or load_exam()
    judge = build(settings)
    try:
        key = report_key(judge, exam)
        stored = _stored_path(settings, key)
        report = None if fresh else _REPORTS.get(key) or _read(stored)
        if report is None or report.get("thresholds") != asdict(thresholds):
            report = run_exam(judge, exam, thresholds, examples)
            if stored is not None and report["failures"]["failed"] == 0:
                _write(stored, report)
    finally:
        judge.close()
    _REPORTS[key] = report
    return report


def examine(
    settings: JudgeSettings,
    *,
    allow_unfit: bool = False,
    build: Callable[[JudgeSettings], Judge] = build_judge,
    exam: Exam | None = None,
) -> dict[str, Any]:
    """The exam record of the judge ``settings`` describe (for result metadata); :class:`JudgeUnfit` if it
    is unfit and ``allow_unfit`` is false. ``exact`` and a switched-off exam are recorded as not examined."""
    if settings.backend == "exact":
        return {"examined": False, "judge": "exact-match", "note": EXACT_NOTE}
    name = judge_name(settings)
    if not settings.exam:
        log.warning("judge %s %s; its verdicts count unexamined", name, OFF_NOTE)
        return {"examined": False, "judge": name, "note": OFF_NOTE}
    report = exam_report(settings, exam=exam, build=build)
    record = exam_record(report)
    if not report["fit"]:
        if not allow_unfit:
            raise JudgeUnfit(unfit_message(settings, report))
        log.warning("judge %s is unfit and used anyway (--allow-unfit): %s", report["judge"], report["verdict"])
        record["allowed_unfit"] = True
    return record


def judge_name(settings: JudgeSettings) -> str:
    """The name the judge's verdicts carry (``Judge.name``), without building it."""
    prompt = load_prompt(settings.prompt)
    return f"{settings.backend}:{settings.model}" + ("" if prompt.builtin else f"#prompt={prompt.version}")


def exam_record(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a report that go into result metadata (no quoted examples)."""
    sides = {
        name: {k: side[k] for k in ("items", "answered", "right", "failed")} | {"accuracy": side["accuracy"]}
        for name, side in report["sides"].items()
    }
    return {
        "examined": True,
        "exam": report["exam"],
        "judge": report["judge"],
        "prompt_version": report["prompt_version"],
        "fit": report["fit"],
        "verdict": report["verdict"],
        "sides": sides,
        "failures": {k: report["failures"][k] for k in ("failed", "items", "rate")},
        "thresholds": report["thresholds"],
        "summary": summary_line(report),
    }


def unfit_message(settings: JudgeSettings, report: dict[str, Any]) -> str:
    others = ", ".join(b for b in BACKENDS if b != settings.backend)
    spec = f"{settings.backend}:{settings.model}" + (f"#prompt={settings.prompt}" if settings.prompt else "")
    return "\n".join(
        [
            f"The judge is unfit: {report['judge']} (prompt {report['prompt_version']}) failed the judge exam.",
            summary_line(report),
            report["verdict"],
            f"Its wrong verdicts: llamavid judge exam --judge '{spec}'",
            f"Way out: another judge (LLAMAVID_JUDGE=... ({others}), LLAMAVID_JUDGE_MODEL) or prompt "
            "(LLAMAVID_JUDGE_PROMPT); or go on with this judge, recorded as not examined: LLAMAVID_JUDGE_EXAM=0 "
            "(an lmms-eval run) or --allow-unfit (llamavid judge rejudge / swap).",
        ]
    )


def _stored_path(settings: JudgeSettings, key: str) -> Path | None:
    cache = cache_for(settings)
    return None if cache is None else cache.directory / "exams" / f"{key}.json"


def _read(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: the judge sits the exam again (verdicts are cached)
        return None
    return report if isinstance(report, dict) and "verdict" in report else None


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{id(report)}.tmp")
    tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)  # readers never see half a file


def exam_notes(configs: dict[str, Any]) -> list[str]:
    """Leaderboard notes ``<task>: <exam summary>`` from results.json ``configs`` (the record check_judge wrote
    into each task's metadata); none for tasks built before the exam existed, nor for the exact judge (its
    name, exact-match, already says it is a floor, not a judge)."""
    notes = []
    for task, config in sorted(configs.items()):
        metadata = config.get("metadata") if isinstance(config, dict) else None
        record = metadata.get(EXAM_KEY) if isinstance(metadata, dict) else None
        if not isinstance(record, dict) or record.get("note") == EXACT_NOTE:
            continue
        if not record.get("examined"):
            notes.append(f"{task}: judge {record.get('judge', '?')} {record.get('note', 'not examined')}")
            continue
        used = " (unfit, used anyway)" if record.get("allowed_unfit") else ""
        notes.append(f"{task}: {record.get('summary', record.get('verdict', '?'))}{used}")
    return notes
