"""Grade a judge on the exam: accuracy on must-be-yes and must-be-no items, failures, fit or unfit.

A judge that says ``yes`` to everything passes a preflight (it answers, the reply parses) and would
report ~100% on any run. The exam asks it clear-cut items (``judges/exam_v1.yaml``) through its normal
path - cached like any verdict, under its prompt version - and reports each side apart, with a 95%
Wilson interval (the items are independent: no item shares a video with another), so that neither
a yes-sayer nor a no-sayer can average its way through. Fit: both sides' lower bound at least
``min_lower`` and at most ``max_failures`` of the items failed (a failure is never read as a verdict).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llamavid_eval.core.scores import common_reason
from llamavid_eval.core.stats import WILSON, proportion_interval
from llamavid_eval.judges.base import Judge, Judgement
from llamavid_eval.judges.exam_data import Exam, ExamItem, load_exam
from llamavid_eval.judges.prompt import BUILTIN

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
        where = ", ".join(f"{k['kind']} {k['wrong']}/{k['items']}" for k in worst[:3]) or "none answered"
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
