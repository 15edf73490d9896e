"""The one rule every command applies to judge failures before it exits: how many may fail.

A run where 190 of 300 judgements failed is not a result, and a script chaining our commands must
see that in the exit status, not only in a warning. By default no failure is accepted; users who know
their judge is flaky accept a share with ``--max-failure-rate``. The share applies to each group on its
own (a judge, a task, a judge on a task: :func:`over_budget`): a judge failing every item must not hide
behind another judge's successes in a pooled total.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-failure-rate F`` (0-1, default 0), the same on every command."""
    parser.add_argument(
        "--max-failure-rate",
        type=rate,
        default=0.0,
        metavar="F",
        help="share of judgements (0-1) allowed to fail before the command exits non-zero (default 0)",
    )


def rate(text: str) -> float:
    """argparse type: a share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-failure-rate must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--max-failure-rate must be between 0 and 1, got {value}")
    return value


def common_reason(errors: Iterable[str | None]) -> str | None:
    """The most frequent failure message (and how many share it), for the last line."""
    counts = Counter(e for e in errors if e)
    if not counts:
        return None
    message, count = counts.most_common(1)[0]
    return f"{message[:300]} (x{count})" if len(counts) > 1 else message[:300]


@dataclass(frozen=True)
class Tally:
    """The failures of one group (``name``: e.g. "judge local:x on msvd_qa") and their most common ``reason``."""

    name: str
    failures: int
    total: int
    reason: str | None = None


def over_budget(tallies: Iterable[Tally], max_rate: float, what: str = "judgements") -> list[str]:
    """One error line per group whose share of failures exceeds ``max_rate``; empty when every group is within."""
    lines = []
    for tally in tallies:
        line = excess(tally.failures, tally.total, max_rate, tally.reason, what)
        if line:
            lines.append(line.replace("error: ", f"error: {tally.name}: ", 1) if tally.name else line)
    return lines


def excess(
    failures: int, total: int, max_rate: float, reason: str | None = None, what: str = "judgements"
) -> str | None:
    """The error line when ``failures`` of ``total`` exceed ``max_rate``, else None."""
    if failures <= 0 or total <= 0 or failures / total <= max_rate:
        return None
    why = f"most common reason: {reason}" if reason else "see the failures above"
    return (
        f"error: {failures} of {total} {what} failed ({100 * failures / total:.1f}% > --max-failure-rate "
        f"{max_rate:g}); {why}"
    )
