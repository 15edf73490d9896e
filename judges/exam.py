"""Grade a judge on the exam: accuracy on must-be-yes and must-be-no items, failures, fit or unfit.

A judge that says ``yes`` to everything passes a preflight (it answers, the reply parses) and would
report ~100% on any run. The exam asks it clear-cut items (``judges/exam_v1.yaml``) through its normal
path - cached like any verdict, under its prompt version - and reports each side apart, with a 95%
Wilson interval (the items are independent: no item shares a video with another), so that neither
a yes-sayer nor a no-sayer can average its way through. Fit: both sides' lower bound at least
``min_lower`` and at most ``max_failures`` of the items failed (a failure is never read as a verdict).

The exam is also a gate (:func:`examine`, second half of this file): building a judged task,
``rejudge`` and ``swap`` call it after the preflight. The judge sits the exam once per judge, model,
prompt version and exam version - the report is kept for the process and on disk next to the verdict
cache (only reports without failures: a failure may be transient and is asked again), and the
verdicts themselves are cached anyway - and an unfit judge stops the run with :class:`JudgeUnfit`
before the video model answers. The way out is another judge or prompt, or ``LLAMAVID_JUDGE_EXAM=0``
/ ``--allow-unfit``; the records then say so. The ``exact`` judge is not examined: exact match is a
floor, not a judge (it fails paraphrases by design), and the demo and tests use it as such; its
records say it was not examined and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llamavid_eval.core.scores import common_reason
from llamavid_eval.core.stats import WILSON, proportion_interval
from llamavid_eval.judges.base import Judge, Judgement
from llamavid_eval.judges.exam_data import Exam, ExamItem, load_exam
from llamavid_eval.judges.factory import BACKENDS, JudgeSettings, build_judge, cache_for
from llamavid_eval.judges.preflight import JudgeUnavailable
from llamavid_eval.judges.prompt import BUILTIN, load_prompt

SIDES = {"yes": True, "no": False}
_RAW = 160  # characters of a reply quoted for a wrong verdict


@dataclass(frozen=True)
class Thresholds:
    """What fit means: each side's 95% lower bound at least ``min_lower``; failures at most ``max_failures``."""

    min_lower: float = 0.85
    max_failures: float = 0.02

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 1.0:
                option = {"min_lower": "--min-lower-bound", "max_failures": "--max-failures"}[name]
                raise ValueError(f"exam threshold {name} ({option}) must be between 0 and 1, got {value}")


DEFAULT_THRESHOLDS = Thresholds()


def run_exam(
    judge: Judge, exam: Exam | None = None, thresholds: Thresholds = DEFAULT_THRESHOLDS, examples: int = 3
) -> dict:
    """Ask ``judge`` every exam item (one ``judge_many`` batch) and grade it (see :func:`grade`)."""
    exam = exam or load_exam()
    judgements = judge.judge_many([item.request for item in exam.items])
    version = getattr(judge, "prompt", None)
    prompt = version.version if version is not None else None  # the exact judge has no prompt
    return grade(exam, judgements, judge.name, prompt, thresholds, examples)


def grade(
    exam: Exam,
    judgements: Sequence[Judgement],
    judge: str,
    prompt_version: str | None = BUILTIN.version,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    examples: int = 3,
) -> dict[str, Any]:
    """The exam report (JSON-ready): sides, failures, kinds with wrong verdicts quoted, fit and the verdict line."""
    pairs = list(zip(exam.items, judgements, strict=True))
    sides = {name: _side([(i, j) for i, j in pairs if i.expect == expect]) for name, expect in SIDES.items()}
    failed = [j for _, j in pairs if j.failed]
    failures = {
        "failed": len(failed),
        "items": len(pairs),
        "rate": len(failed) / len(pairs) if pairs else math.nan,
        "reason": common_reason(j.error for j in failed),
    }
    kinds = [_kind(exam, kind, [(i, j) for i, j in pairs if i.kind == kind], examples) for kind in exam.rules]
    reasons = _unfit_reasons(sides, failures, kinds, thresholds)
    return {
        "exam": exam.version,
        "exam_file": exam.source,
        "judge": judge,
        "prompt_version": prompt_version,
        "items": len(pairs),
        "sides": sides,
        "failures": failures,
        "kinds": kinds,
        "thresholds": asdict(thresholds),
        "interval_method": WILSON,
        "fit": not reasons,
        "verdict": "fit" if not reasons else "unfit: " + "; ".join(reasons),
    }


def _side(pairs: list[tuple[ExamItem, Judgement]]) -> dict[str, Any]:
    answered = [(i, j) for i, j in pairs if not j.failed]
    right = sum(bool(j.verdict) == i.expect for i, j in answered)
    return {
        "items": len(pairs),
        "answered": len(answered),
        "right": right,
        "failed": len(pairs) - len(answered),
        "accuracy": proportion_interval(right, len(answered)).to_dict(),
    }


def _kind(exam: Exam, kind: str, pairs: list[tuple[ExamItem, Judgement]], examples: int) -> dict[str, Any]:
    wrong = [(i, j) for i, j in pairs if j.failed or bool(j.verdict) != i.expect]
    return {
        "kind": kind,
        "expect": "yes" if exam.expects[kind] else "no",
        "rule": exam.rules[kind],
        "items": len(pairs),
        "wrong": sum(not j.failed for _, j in wrong),
        "failed": sum(j.failed for _, j in wrong),
        "examples": [_example(i, j) for i, j in wrong[:examples]],
    }


def _example(item: ExamItem, j: Judgement) -> dict[str, Any]:
    said = "failed" if j.failed else ("yes" if j.verdict else "no")
    return {
        "topic": item.topic,
        "question": item.request.question,
        "answer": item.request.answer,
        "prediction": item.request.prediction,
        "expected": "yes" if item.expect else "no",
        "said": said,
        "score": j.score,
        "reply": (j.raw or "")[:_RAW],
        "error": j.error,
    }


def _unfit_reasons(
    sides: dict[str, Any], failures: dict[str, Any], kinds: list[dict[str, Any]], thresholds: Thresholds
) -> list[str]:
    """Why the judge is unfit (empty: fit): each side under its bound, with the kinds it gets wrong most."""
    reasons = []
    for name, side in sides.items():
        low = side["accuracy"]["low"]
        if math.isfinite(low) and low >= thresholds.min_lower:
            continue
        worst = sorted((k for k in kinds if k["expect"] == name and k["wrong"]), key=lambda k: -k["wrong"] / k["items"])
        where = ", ".join(f"{k['kind']} {k['wrong']}/{k['items']}" for k in worst[:3])
        where = where or f"none; only {side['answered']} of {side['items']} answered, too few for the bound"
        bound = f"{100 * low:.1f}%" if math.isfinite(low) else "none (no item answered)"
        reasons.append(
            f"must-be-{name} side: 95% lower bound {bound} < {100 * thresholds.min_lower:g}% (wrong: {where})"
        )
    rate = failures["rate"]
    if not (math.isfinite(rate) and rate <= thresholds.max_failures):
        reasons.append(
            f"{failures['failed']} of {failures['items']} judgements failed ({100 * rate:.1f}% > "
            f"{100 * thresholds.max_failures:g}%): {failures['reason']}"
        )
    return reasons


def _share(side: dict[str, Any]) -> str:
    iv = side["accuracy"]
    if not math.isfinite(iv["estimate"]):
        return f"no item answered ({side['failed']} failed)"
    return (
        f"{side['right']} of {side['answered']} right = {100 * iv['estimate']:.1f}% "
        f"(95% CI {100 * iv['low']:.1f}-{100 * iv['high']:.1f}), {side['failed']} failed"
    )


def summary_line(report: dict[str, Any]) -> str:
    """One line for records, leaderboard notes and the swap report."""
    sides = report["sides"]
    f = report["failures"]
    return (
        f"judge exam {report['exam']}: {report['verdict'].split(':')[0]}; must be yes {_short(sides['yes'])}, "
        f"must be no {_short(sides['no'])}, failures {f['failed']}/{f['items']}"
    )


def _short(side: dict[str, Any]) -> str:
    iv = side["accuracy"]
    if not math.isfinite(iv["estimate"]):
        return "n/a"
    return f"{100 * iv['estimate']:.1f}% ({100 * iv['low']:.1f}-{100 * iv['high']:.1f})"


def to_text(report: dict[str, Any]) -> str:
    """The report for people; its last line is ``fit`` or ``unfit: <which side, which kinds>``."""
    t = report["thresholds"]
    f = report["failures"]
    lines = [
        f"Judge exam {report['exam']} ({report['items']} items, {report['exam_file']})",
        f"judge: {report['judge']}; prompt: {report['prompt_version'] or 'none (not an LLM judge)'}",
        f"must be yes: {_share(report['sides']['yes'])}",
        f"must be no:  {_share(report['sides']['no'])}",
        f"failures: {f['failed']} of {f['items']} ({100 * f['rate']:.1f}%; at most {100 * t['max_failures']:g}% allowed)",
        f"Intervals: 95% {report['interval_method']}, over the items that did not fail. Fit: both sides' lower "
        f"bound >= {100 * t['min_lower']:g}% and failures <= {100 * t['max_failures']:g}%.",
    ]
    wrong = [k for k in report["kinds"] if k["wrong"] or k["failed"]]
    if wrong:
        lines += ["", "Kinds it gets wrong:"]
    for k in sorted(wrong, key=lambda k: -(k["wrong"] + k["failed"]) / k["items"]):
        lines.append(
            f"- {k['kind']} (must be {k['expect']}: {k['rule']}): {k['wrong']} of {k['items']} wrong, {k['failed']} failed"
        )
        for e in k["examples"]:
            said = f"failed: {e['error']}" if e["said"] == "failed" else f"said {e['said']} (score {e['score']})"
            reply = f"; reply {e['reply']!r}" if e["reply"] else ""
            lines.append(f"    answer {e['answer']!r}, prediction {e['prediction']!r} ({e['topic']}): {said}{reply}")
    lines += ["", report["verdict"]]
    return "\n".join(lines)


# --- The gate: no verdict counts from an unfit judge unless the user says so.
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
    if settings.backend == "exact":
        return "exact-match"
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
    url = f"@{settings.base_url}" if settings.base_url and settings.backend in ("local", "openai") else ""
    model = str(settings.model).replace("@", "%40")  # the spec's escape: its first '@' starts the URL
    spec = f"{settings.backend}:{model}{url}" + (f"#prompt={settings.prompt}" if settings.prompt else "")
    return "\n".join(
        [
            f"The judge is unfit: {report['judge']} (prompt {report['prompt_version']}) failed the judge exam.",
            summary_line(report),
            report["verdict"],
            f"Its wrong verdicts: llamavid judge exam --judge '{spec}'",
            f"Way out: another judge (LLAMAVID_JUDGE=... ({others}), LLAMAVID_JUDGE_MODEL) or prompt "
            "(LLAMAVID_JUDGE_PROMPT); or go on with this judge: LLAMAVID_JUDGE_EXAM=0 in an lmms-eval run (recorded "
            "as not examined) or --allow-unfit for llamavid judge rejudge / swap (recorded as unfit, allowed).",
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
