"""The leaderboard: runs -> one pandas frame -> Markdown / CSV.

Missing values stay NaN in the frame and are rendered as "—" (never 0): a failed task must not look
like a model that scored zero. Measured values carry a 95% interval (``69.7 ± 0.8``; how it was made
is stated under every table); reported rows carry none and say so. The default Markdown view is the
headline: one column per task with its main metric, like the paper's table; ``detail=True`` adds the
per-class and diagnostic columns (``acc_<class>``, ``unmapped``, ``judge_failures``), which the HTML
page and the CSV always have.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from llamavid_eval.core.scores import HEADLINE
from llamavid_eval.core.stats import Interval
from llamavid_eval.results.load import REPORTED_NOTE, Run, methods

MISSING = "—"
DATE_COLUMN = "date (UTC)"
ID_COLUMNS = ["kind", "model", "checkpoint", "fps", "max_frames", "judge", DATE_COLUMN]
#: The metric that stands for a task in the headline view, in order of preference (else its first metric).
MAIN_METRICS = ["accuracy", "exact_match", "gpt_eval_accuracy", "acc", "mean_score"]
#: Per-class and diagnostic metrics: the detail view, the HTML page and the CSV only.
DIAGNOSTIC = re.compile(r"^(acc|accuracy)_|_all$|^(unmapped|judge_failures|judged_items|excluded_videos)$")
#: After the metrics; args/notes only when some row has one.
OPTIONAL_COLUMNS = ["args", "notes"]
TRAILING_COLUMNS = ["source"]


@dataclass
class Leaderboard:
    """Rows plus what the renderers need to know about the metric columns."""

    frame: pd.DataFrame
    metric_columns: list[str]
    higher_is_better: dict[str, bool | None] = field(default_factory=dict)
    intervals: dict[tuple[int, str], Interval] = field(default_factory=dict)  # (row position, column) -> 95% CI
    runs: list[Run] = field(default_factory=list)  # row order, for plots
    #: (row position, column) -> why the cell holds no number: a judge over the failure budget (never a score)
    withheld: dict[tuple[int, str], str] = field(default_factory=dict)

    @property
    def id_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in self.metric_columns]


def column_name(task: str, metric: str) -> str:
    return f"{task}/{metric}"


def merge_latest(runs: list[Run]) -> list[Run]:
    """Collapse repeats of one configuration: per task, the newest run that has the task wins, except
    that a complete run wins over a newer partial one (``--limit``: a smoke test must not replace it).

    Per task rather than per run, so that evaluating a second task later does not hide the first.
    The judge is per task too: one row per judge used in the configuration, and tasks that need no
    judge (e.g. multiple choice) appear in each of those rows, since their numbers do not depend on it.
    """
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.config_key(), []).append(run)
    merged = []
    for members in groups.values():
        members = sorted(members, key=lambda r: (r.date, r.source))
        judges = sorted({j for r in members for j in r.task_judges.values() if j}) or [""]
        for judge in judges:
            merged.append(_merge_one(members, judge))
    return merged


def _merge_one(members: list[Run], judge: str) -> Run:
    """The row for one judge from a configuration's runs (oldest first)."""
    newest = members[-1]
    out = Run(
        **{
            **newest.__dict__,
            "metrics": {},
            "stderr": {},
            "higher_is_better": {},
            "n_samples": {},
            "samples": {},
            "task_judges": {},
            "intervals": {},
            "withheld": {},
            "notes": [],
        }
    )
    used = []
    # newest first, complete runs before partial ones (the sort is stable)
    for run in sorted(reversed(members), key=lambda r: r.partial):
        fresh = [t for t in run.metrics if t not in out.metrics and run.task_judges.get(t, "") in ("", judge)]
        for task in fresh:
            out.metrics[task] = run.metrics[task]
            out.stderr[task] = run.stderr.get(task, {})
            out.intervals[task] = run.intervals.get(task, {})
            if task in run.withheld:
                out.withheld[task] = run.withheld[task]
            out.higher_is_better[task] = run.higher_is_better.get(task, {})
            out.n_samples[task] = run.n_samples.get(task, (None, None))
            out.task_judges[task] = run.task_judges.get(task, "")
            if task in run.samples:
                out.samples[task] = run.samples[task]
        if fresh:
            used.append(run)
            out.notes += [n for n in run.notes if n.split(":")[0] in fresh or ":" not in n]
        elif run is newest and not run.metrics:
            out.notes.append(f"newest run ({run.date}) has no results")
    out.judge = judge
    out.source = "; ".join(r.source for r in used) or newest.source
    out.date = max((r.date for r in used), default=newest.date)
    superseded = sum(
        1 for r in members if r not in used and any(r.task_judges.get(t, "") in ("", judge) for t in r.metrics)
    )
    if superseded:
        out.notes.append(f"{superseded} older run(s) superseded")
    return out


def select_reference(reference: list[Run], measured: list[Run], mode: str) -> list[Run]:
    """``all``, ``none`` or ``matching`` (only reference values for tasks that were measured)."""
    if mode == "none":
        return []
    if mode == "all" or not measured:
        return list(reference)
    tasks = {t for run in measured for t in run.metrics}
    kept = []
    for run in reference:
        metrics = {t: m for t, m in run.metrics.items() if t in tasks}
        if metrics:
            kept.append(
                Run(
                    **{
                        **run.__dict__,
                        "metrics": metrics,
                        "notes": [n for n in run.notes if n.split(":")[0] in metrics],
                    }
                )
            )
    return kept


def _fmt_number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def build(
    runs: list[Run], reference: list[Run] | None = None, latest: bool = True, reference_mode: str = "matching"
) -> Leaderboard:
    """Leaderboard rows: reported references first, then measured runs oldest to newest."""
    measured = merge_latest(runs) if latest else list(runs)
    measured.sort(key=lambda r: (r.date, r.source))
    ordered = select_reference(reference or [], measured, reference_mode) + measured
    metric_cols: list[str] = []
    hib: dict[str, bool | None] = {}
    records, intervals, withheld = [], {}, {}
    for position, run in enumerate(ordered):
        row: dict[str, object] = {
            "kind": run.kind,
            "source": run.source,
            "model": run.model,
            "checkpoint": run.checkpoint,
            "fps": _fmt_number(run.fps),
            "max_frames": _fmt_number(run.max_frames),
            "judge": run.judge,
            DATE_COLUMN: run.date,
            "args": run.extra_args,
            "notes": "; ".join(run.notes),
        }
        for task, values in run.metrics.items():
            for metric, value in values.items():
                col = column_name(task, metric)
                if col not in hib:
                    metric_cols.append(col)
                    hib[col] = run.higher_is_better.get(task, {}).get(metric)
                row[col] = math.nan if value is None else value
                if (interval := run.intervals.get(task, {}).get(metric)) is not None:
                    intervals[(position, col)] = interval
                if task in run.withheld and metric in HEADLINE:
                    withheld[(position, col)] = run.withheld[task]
        records.append(row)
    metric_cols = _order_columns(metric_cols, ordered)
    columns = (
        ID_COLUMNS + metric_cols + [c for c in OPTIONAL_COLUMNS if any(r.get(c) for r in records)] + TRAILING_COLUMNS
    )
    frame = pd.DataFrame(records, columns=columns)
    for col in metric_cols:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return Leaderboard(frame, metric_cols, hib, intervals, ordered, withheld)


def _order_columns(cols: list[str], runs: list[Run]) -> list[str]:
    """Measured tasks first (alphabetically), then reference-only tasks; metrics keep first-seen order."""
    measured_tasks = {t for r in runs if r.kind == "measured" for t in r.metrics}
    first_seen = {c: i for i, c in enumerate(cols)}
    return sorted(cols, key=lambda c: (c.split("/")[0] not in measured_tasks, c.split("/")[0], first_seen[c]))


def resolve_column(board: Leaderboard, name: str) -> str:
    """An exact column, a task's name (its headline column, as the default view shows it), or a unique
    ``task/metric`` suffix match (``accuracy`` if only one task has it)."""
    if name in board.frame.columns:
        return name
    headline = [c for c in headline_columns(board) if c.split("/")[0] == name]
    if headline:
        return headline[0]
    hits = [c for c in board.metric_columns if c.endswith("/" + name) or c.startswith(name + "/")]
    if len(hits) == 1:
        return hits[0]
    choices = ", ".join(hits or board.metric_columns) or "(no metric columns)"
    raise KeyError(f"--sort {name!r} is {'ambiguous' if hits else 'unknown'}; choose one of: {choices}")


def sort(board: Leaderboard, name: str, descending: bool | None = None) -> Leaderboard:
    """Best first (direction from ``higher_is_better``, default higher); missing values always last."""
    col = resolve_column(board, name)
    if descending is None:
        descending = board.higher_is_better.get(col) is not False
    order = board.frame[col].sort_values(ascending=not descending, na_position="last", kind="stable").index
    positions = list(order)
    remap = {old: new for new, old in enumerate(positions)}
    return Leaderboard(
        frame=board.frame.loc[order].reset_index(drop=True),
        metric_columns=board.metric_columns,
        higher_is_better=board.higher_is_better,
        intervals={(remap[p], c): v for (p, c), v in board.intervals.items()},
        runs=[board.runs[p] for p in positions],
        withheld={(remap[p], c): v for (p, c), v in board.withheld.items()},
    )


def format_value(value: object, column: str | None = None) -> str:
    """Cell text: numbers with up to 2 decimals, counts as integers, missing as "—"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return (
            str(int(value))
            if value.is_integer() and abs(value) < 1e15
            else (f"{value:.2f}".rstrip("0").rstrip(".") or "0")
        )
    return str(value) if str(value) != "" else MISSING


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def headline_columns(board: Leaderboard) -> list[str]:
    """One metric column per task: its main metric (``MAIN_METRICS`` order, else its first non-diagnostic one)."""
    by_task: dict[str, list[str]] = {}
    for col in board.metric_columns:
        by_task.setdefault(col.split("/")[0], []).append(col)
    chosen = []
    for task, cols in by_task.items():
        metrics = [c.split("/", 1)[1] for c in cols]
        main = next((m for m in MAIN_METRICS if m in metrics), None)
        main = main or next((m for m in metrics if not DIAGNOSTIC.search(m)), metrics[0])
        chosen.append(column_name(task, main))
    return chosen


def format_cell(board: Leaderboard, position: int, column: str, value: object) -> str:
    """A metric cell: ``judge failed (36 of 40 items)`` when withheld, else the value with its interval."""
    if (why := board.withheld.get((position, column))) is not None:
        return why.replace("judge failed on ", "judge failed (") + ")"
    return format_interval(value, board.intervals.get((position, column)))


def format_interval(value: object, interval: Interval | None) -> str:
    """``69.7 ± 0.8`` (``0.00 (0.00-7.87)`` when one-sided): one decimal from 10 up, two below; the plain
    value when there is no interval."""
    text = format_value(value)
    if interval is None or text == MISSING or not math.isfinite(interval.half_width):
        return text
    digits = 1 if abs(float(value)) >= 10 else 2  # type: ignore[arg-type]
    return replace(interval, estimate=float(value)).short(digits)  # type: ignore[arg-type]


def interval_notes(board: Leaderboard) -> list[str]:
    """The lines under every table: what ``±`` means, how each interval was made, why reported rows have none."""
    lines = [
        "± = half-width of the 95% confidence interval, or the interval itself in brackets where it is "
        "lopsided (near 0% or 100%); judged metrics rest on the items that were judged (judge failures excluded), "
        "their `_all` forms on every item (a failure counted as wrong)."
    ]
    every = [iv for run in board.runs for by_metric in run.intervals.values() for iv in by_metric.values()]
    lines += [f"Interval method: {m}." for m in methods(every)]
    if every:
        lines.append(
            "The items each interval rests on (n) and their videos (clusters): the CSV's `<metric>_n` and `_clusters` "
            "columns; the HTML page's cell tooltips."
        )
    if any(run.kind == "reported" for run in board.runs):
        lines.append(REPORTED_NOTE[0].upper() + REPORTED_NOTE[1:] + ".")
    lines.append(
        "Dates are UTC, converted from lmms-eval's file-name stamps (written in UTC+8 unless --timezone said otherwise)."
    )
    return lines


def to_markdown(board: Leaderboard, short_source: bool = True, detail: bool = False) -> str:
    """GitHub Markdown table (headline view unless ``detail``); numeric columns right-aligned; notes below."""
    frame = board.frame
    shown = board.metric_columns if detail else headline_columns(board)
    headers = [c for c in frame.columns if c not in board.metric_columns or c in shown]
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if h in board.metric_columns else "---" for h in headers) + "|")
    for position, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for h in headers:
            value = row[h]
            if h == "source" and short_source and row["kind"] == "measured":
                value = short_source_text(str(value))
            if h in board.metric_columns:
                cells.append(_md_escape(format_cell(board, position, h, value)))
            else:
                cells.append(_md_escape(format_value(value, h)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in interval_notes(board)]
    if not detail and len(shown) < len(board.metric_columns):
        lines.append(
            f"- {len(board.metric_columns) - len(shown)} more metric column(s) (per-class, diagnostics): "
            "`llamavid results table --detail`, the HTML page or the CSV."
        )
    return "\n".join(lines) + "\n"


def judge_failures(board: Leaderboard) -> tuple[int, int]:
    """(judge failures, judged items) over the measured rows: what ``results table`` exits on."""
    failed = total = 0
    for run in board.runs:
        if run.kind != "measured":
            continue
        for task, values in run.metrics.items():
            count = values.get("judge_failures")
            if count is None or math.isnan(count):
                continue
            judged = max((iv.n for iv in run.intervals.get(task, {}).values()), default=0)
            failed += int(count)
            total += int(values.get("judged_items") or run.n_samples.get(task, (None, None))[0] or judged + count)
    return failed, total


def short_source_text(sources: str) -> str:
    """``.../outputs/run1/model/2025..._results.json`` -> ``run1/model/2025..._results.json`` (each of "a; b")."""
    out = []
    for path in sources.split("; "):
        parts = Path(path).parts
        out.append("/".join(parts[-3:]) if len(parts) > 3 else path)
    return "; ".join(out)


def to_csv(board: Leaderboard, path: Path) -> None:
    """Machine-readable: raw numbers, empty cells for missing values; after each metric column its
    ``_ci_low`` / ``_ci_high`` / ``_n`` (items) / ``_clusters`` (the videos they were resampled by; ``_n``
    when items were independent), empty for reported rows and where no interval could be made."""
    frame = board.frame.copy()
    parts: tuple[tuple[str, Callable[[Interval], float], str], ...] = (
        ("ci_low", lambda iv: iv.low, "float64"),
        ("ci_high", lambda iv: iv.high, "float64"),
        ("n", lambda iv: iv.n, "Int64"),  # counts stay integers beside empty cells
        ("clusters", lambda iv: iv.clusters, "Int64"),
    )
    for col in board.metric_columns:
        found = [board.intervals.get((i, col)) for i in range(len(frame))]
        at = frame.columns.get_loc(col) + 1
        for offset, (suffix, get, dtype) in enumerate(parts):
            cells = pd.array([None if iv is None else get(iv) for iv in found], dtype=dtype)
            frame.insert(at + offset, f"{col}_{suffix}", cells)
    frame.to_csv(path, index=False)
