"""``llamavid judge exam --judge SPEC``: is this judge fit to judge? Exit 0 fit, 1 unfit, 2 when it cannot run.

The judge is checked (preflight), then sits the exam through its normal path (verdicts cached under its
prompt version); the report goes to stdout (text, or JSON with ``--json``) and is remembered for the gate
that runs before judged tasks, ``rejudge`` and ``swap`` (``judges.exam``). The last line is ``fit`` or
``unfit: <which side, which kinds>`` (on stderr too with ``--json``, so a script sees it either way).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llamavid_eval.judges.exam import Thresholds, exam_report, to_text
from llamavid_eval.judges.exam_data import load_exam
from llamavid_eval.judges.factory import resolve_settings
from llamavid_eval.judges.preflight import check_once
from llamavid_eval.judges.swap import parse_spec

_DEFAULT = Thresholds()


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``exam`` subcommand of ``llamavid judge`` (the transport options are added by the caller)."""
    e = sub.add_parser("exam", help="examine a judge on clear-cut items: fit or unfit (exit 0 / 1)")
    e.add_argument(
        "--judge", required=True, help="backend[:model][@base_url][#prompt=FILE], as in swap --judges (one judge)"
    )
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.add_argument(
        "--min-lower-bound",
        type=float,
        default=_DEFAULT.min_lower,
        help=f"fit needs each side's 95%% lower bound at least this (0-1, default {_DEFAULT.min_lower})",
    )
    e.add_argument(
        "--max-failures",
        type=float,
        default=_DEFAULT.max_failures,
        help=f"fit needs at most this share of failed judgements (0-1, default {_DEFAULT.max_failures})",
    )
    e.add_argument("--exam", help="exam file (default: the built-in exam_v1.yaml)")
    e.add_argument("--examples", type=int, default=3, help="wrong verdicts quoted per kind (default 3)")
    e.add_argument("--base-url", help="endpoint for a local judge whose spec names none with @")
    e.add_argument("--batch-size", type=int, help="hf judge: items per batch")
    return e


def run(args: argparse.Namespace, transport: dict[str, Any]) -> int:
    """Examine the judge ``--judge`` names; ``transport``: the common judge options (``--timeout`` ...)."""
    spec = parse_spec(args.judge, "--judge")
    thresholds = Thresholds(args.min_lower_bound, args.max_failures)  # ValueError (exit 2) when out of 0-1
    overrides = {**transport, "batch_size": args.batch_size, **spec.overrides()}
    settings = resolve_settings(overrides=overrides)
    exam = load_exam(args.exam)
    check_once(settings)  # a judge that cannot answer stops here (exit 2), not as 168 failures
    report = exam_report(settings, exam=exam, thresholds=thresholds, examples=max(args.examples, 0), fresh=True)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        print(report["verdict"], file=sys.stderr)
    else:
        print(to_text(report))
    return 0 if report["fit"] else 1
