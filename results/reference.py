"""Reported numbers (paper, reproduction study) as :class:`Run` rows, from ``reference.csv``.

Kept as data, not code, so a new paper number is a one-line change reviewed like any other.
"""

from __future__ import annotations

import csv
from pathlib import Path

from llamavid_eval.results.load import Run

REFERENCE_CSV = Path(__file__).with_name("reference.csv")
_MODEL = "LLaMA-VID"


def load_reference(path: Path = REFERENCE_CSV) -> list[Run]:
    """One reported Run per (source, checkpoint, fps, judge); notes collect each value's caveats."""
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")
    ]
    runs: dict[tuple[str, str, str, str], Run] = {}
    for row in csv.DictReader(lines):
        key = (row["source"], row["checkpoint"], row["fps"], row["judge"])
        run = runs.get(key)
        if run is None:
            run = runs[key] = Run(
                kind="reported",
                source=row["source"],
                model=_MODEL,
                checkpoint=row["checkpoint"],
                checkpoint_path=row["checkpoint"],
                fps=float(row["fps"]) if row["fps"] else None,
                judge=row["judge"],
            )
        task, metric = row["task"], row["metric"]
        run.metrics.setdefault(task, {})[metric] = float(row["value"])
        run.higher_is_better.setdefault(task, {})[metric] = True
        run.task_judges[task] = row["judge"]
        note = (row.get("note") or "").strip()
        if note and f"{task}: {note}" not in run.notes:
            run.notes.append(f"{task}: {note}")
    return list(runs.values())
