"""Read lmms-eval output folders into :class:`Run` leaderboard rows.

Reading the files (names, metric keys, samples, time stamps) is :mod:`llamavid_eval.core.outputs`;
this module turns them into rows: configuration from ``model_args``, judge per task, judge failures,
dates in UTC, the judge failure budget, and a 95% interval for every metric as the run recorded it; and
the reported numbers (paper, reproduction study) of ``reference.csv`` as rows of their own.

Intervals, in order of preference: the ``<metric>_ci_low/_ci_high/_n/_clusters`` the task wrote into results.json
(made by :mod:`llamavid_eval.core.scores` at evaluation time; for an older judged run without them, the
same function on its logged verdicts); lmms-eval's clustered stderr (``cluster_key``), then its plain
stderr (normal approximation); otherwise none. Reported (paper/study) rows never get one: their per-item
data is not public.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llamavid_eval.core.outputs import (
    find_result_files,
    iter_samples,
    judge_label,
    judge_names,
    number,
    parse_model_args,
    parse_task_metrics,
    parse_task_uncertainty,
    read_results,
    results_stamp,
    run_date_utc,
    samples_beside,
)
from llamavid_eval.core.scores import (
    COUNTS,
    HEADLINE,
    MAX_FAILURE_RATE_ENV,
    judged_items,
    judged_scores,
    mean_interval,
    metric_items,
    over_budget,
    written_method,
)
from llamavid_eval.core.stats import Interval
from llamavid_eval.judges.exam import exam_notes
from llamavid_eval.judges.factory import resolve_settings

__all__ = [
    "REFERENCE_CSV",
    "Run",
    "load_reference",
    "load_run",
    "load_runs",
    "parse_model_args",
    "parse_task_metrics",
    "short_checkpoint",
]

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
STDERR_METHOD = "normal approximation (value ± 1.96 × lmms-eval's stderr; items treated as independent)"
CLUSTERED_METHOD = "normal approximation (value ± 1.96 × lmms-eval's clustered stderr, by video)"
REPORTED_NOTE = "reported rows (paper/study) carry no interval: their per-item results are not public"


def from_stderr(value: float, stderr: float, n: int | None, method: str = STDERR_METHOD) -> Interval:
    count = n or 0
    return Interval(value, value - Z_95 * stderr, value + Z_95 * stderr, count, count, method)


def from_results(metric: str, value: float, found: dict[str, float], n: int | None) -> Interval | None:
    """The interval results.json holds for ``metric`` (task-written CI, else a stderr), or None."""
    if "ci_low" in found and "ci_high" in found:
        count = int(found.get("n", n or 0))
        method = written_method(metric.split("[")[0], value)
        return Interval(value, found["ci_low"], found["ci_high"], count, int(found.get("clusters", count)), method)
    if "stderr_clustered" in found:
        return from_stderr(value, found["stderr_clustered"], n, CLUSTERED_METHOD)
    if "stderr" in found:
        return from_stderr(value, found["stderr"], n)
    return None


def methods(intervals: Iterable[Interval]) -> list[str]:
    """The distinct methods of ``intervals``, in order, for the line under each table."""
    return list(dict.fromkeys(iv.method for iv in intervals))


#: ``llamavid judge rejudge`` output beside a run (judges/rejudge.py): same predictions, another judge.
_REJUDGE_SUMMARY = re.compile(r"^(?P<ts>.*?)_?rejudge_(?P<judge>.+)_summary\.json$")
_JUDGE_KEYS = ("judge", "judge_name")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class Run:
    """One leaderboard row's worth of data: a measured lmms-eval run or a reported reference."""

    kind: str  # "measured" or "reported"
    source: str  # results file (measured) or "paper"/"study" (reported)
    model: str
    checkpoint: str
    fps: float | None = None
    max_frames: int | None = None
    judge: str = ""
    date: str = ""  # ISO "YYYY-MM-DD HH:MM:SS" (sorts as text), "" when unknown
    extra_args: str = ""  # other model_args / gen_kwargs: they change the configuration too
    checkpoint_path: str = ""
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    stderr: dict[str, dict[str, float]] = field(default_factory=dict)
    #: task -> metric -> results.json's stderr / stderr_clustered / ci_low / ci_high / n / clusters
    uncertainty: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    higher_is_better: dict[str, dict[str, bool | None]] = field(default_factory=dict)
    n_samples: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)  # effective, original
    samples: dict[str, Path] = field(default_factory=dict)  # task -> samples jsonl
    task_judges: dict[str, str] = field(default_factory=dict)  # task -> judge name ("" = not judged)
    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)  # task -> metric -> 95% CI
    #: task -> why its judged metrics are not shown ("judge failed on 36 of 40 items"): over the failure budget
    withheld: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        """Some task ran on fewer docs than it has (lmms-eval's ``--limit``)."""
        return any(n is not None and total and n < total for n, total in self.n_samples.values())

    def config_key(self) -> tuple:
        """Runs with the same key are repeats of one configuration; the judge is per task, see table.merge_latest."""
        return (
            self.kind,
            self.source if self.kind == "reported" else "",
            self.model,
            self.checkpoint_path or self.checkpoint,
            self.fps,
            self.max_frames,
            self.extra_args,
        )


def short_checkpoint(path: str) -> str:
    """Readable checkpoint name: HF repo name or folder name; a folder named by what it holds keeps its run's
    name (``run/checkpoint-500``; ``run/model`` and ``run/adapter``, as ``llamavid train`` writes them)."""
    parts = [p for p in path.rstrip("/").split("/") if p]
    if not parts:
        return ""
    if re.fullmatch(r"checkpoint-\d+|model|adapter", parts[-1]) and len(parts) > 1:
        return "/".join(parts[-2:])
    return parts[-1]


def _as_int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text not in (None, "") else None
    except ValueError:
        return None


def _as_float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _config_judge(cfg: Any) -> str:
    """Judge name a task config declares (``metadata`` or ``lmms_eval_specific_kwargs``), else ""."""
    if not isinstance(cfg, dict):
        return ""
    kwargs = cfg.get("lmms_eval_specific_kwargs")
    spots = [cfg.get("metadata"), kwargs] + (
        [v for v in kwargs.values() if isinstance(v, dict)] if isinstance(kwargs, dict) else []
    )
    for spot in spots:
        if not isinstance(spot, dict):
            continue
        backend = spot.get("judge_backend") or next(
            (spot[k] for k in _JUDGE_KEYS if isinstance(spot.get(k), str) and spot[k]), None
        )
        model = spot.get("judge_model")
        if backend and ":" in str(backend):
            return str(backend)
        if backend or model:  # tasks/*: metadata {judge: openai, judge_model: gpt-3.5-turbo}; env may override
            return judge_label(backend or "?", model or "?")
    return ""


def load_run(path: Path, max_failure_rate: float | None = None) -> Run:
    """Parse one results.json (raises ValueError when it is not an lmms-eval results file); judged tasks over
    the failure budget (default ``$LLAMAVID_JUDGE_MAX_FAILURE_RATE``) are withheld."""
    data = read_results(path)
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    args = parse_model_args(config.get("model_args", ""))
    ckpt_path = args.pop("pretrained", "") or str(data.get("model_name") or "")
    lora = args.pop("lora", "")  # a LoRA run is named by base and adapter, never by the base alone
    name = short_checkpoint(ckpt_path) + (f" + LoRA {short_checkpoint(lora)}" if lora else "")
    fps, max_frames = _as_float(args.pop("fps", None)), _as_int(args.pop("max_frames", None))
    extra = [f"{k}={v}" for k, v in sorted(args.items())]
    if config.get("gen_kwargs"):
        extra.append(f"gen_kwargs={config['gen_kwargs']}")
    run = Run(
        kind="measured",
        source=str(path),
        model=str(config.get("model") or data.get("model_source") or "?"),
        checkpoint=name or "?",
        checkpoint_path=ckpt_path + (f",lora={lora}" if lora else ""),
        fps=fps,
        max_frames=max_frames,
        date=run_date_utc(data.get("date"), results_stamp(path), config, path).strftime(DATE_FORMAT),
        extra_args=",".join(extra),
        samples=samples_beside(path),
    )
    task_blocks = dict(data.get("results") or {})
    for group, block in (data.get("groups") or {}).items():
        task_blocks.setdefault(group, block)  # a group may be listed in both
    hib = data.get("higher_is_better") or {}
    n_samples = data.get("n-samples") or {}
    for task, block in task_blocks.items():
        if not isinstance(block, dict):
            continue
        values, errors = parse_task_metrics(block)
        run.metrics[task], run.stderr[task] = values, errors
        run.uncertainty[task] = parse_task_uncertainty(block)
        run.higher_is_better[task] = {m: hib.get(task, {}).get(m.split("[")[0]) for m in values}
        counts = n_samples.get(task) or {}
        effective = counts.get("effective", block.get("samples"))
        run.n_samples[task] = (_as_int(effective), _as_int(counts.get("original")))
    _annotate(run, config)
    _read_samples(run, data.get("configs") or {})
    run.notes += exam_notes(data.get("configs") or {})  # the judge exam's figures, or "not examined"
    run.judge = ", ".join(sorted({j for j in run.task_judges.values() if j}))
    _finish(run, max_failure_rate)
    return run


def _finish(run: Run, max_failure_rate: float | None) -> None:
    """Judged metrics from the logged verdicts where results.json lacks them, the budget, then the intervals."""
    rate = resolve_settings().max_failure_rate if max_failure_rate is None else max_failure_rate
    for task in run.metrics:
        _from_verdicts(run, task, rate)
        _apply_budget(run, task, rate)
    _attach_intervals(run)


def _attach_intervals(run: Run) -> None:
    """An interval for every metric that has a value and none yet, from what results.json holds
    (:func:`from_results`)."""
    if run.kind != "measured":
        return
    for task, values in run.metrics.items():
        n = run.n_samples.get(task, (None, None))[0]
        out = run.intervals.setdefault(task, {})
        samples: list[dict[str, Any]] | None = None  # read once per task, when a metric first needs them
        for metric, value in values.items():
            if value is None or metric in out:
                continue
            found = dict(run.uncertainty.get(task, {}).get(metric, {}))
            if metric in run.stderr.get(task, {}):
                found.setdefault("stderr", run.stderr[task][metric])
            interval = from_results(metric, value, found, n)
            if interval is None and task in run.samples:
                samples = _task_samples(run, task) if samples is None else samples
                interval = _from_samples(samples, task, metric, value)
            if interval is not None:
                out[metric] = interval


def _task_samples(run: Run, task: str) -> list[dict[str, Any]]:
    """A task's logged samples; an unreadable file gives none (its metrics then get no interval from them)."""
    try:
        return list(iter_samples(run.samples[task]))
    except (OSError, ValueError):
        return []


def _from_samples(samples: list[dict[str, Any]], task: str, metric: str, value: float) -> Interval | None:
    """A metric the task wrote no interval for (a per-class or per-type column): the 95% cluster-bootstrap
    interval of its logged per-item values (:func:`llamavid_eval.core.scores.mean_interval`, the tasks' own
    computation), when they reproduce the reported value; otherwise None (no interval rather than a wrong one)."""
    items = metric_items(samples, task, metric) if samples else None
    if items is None or (mean := items.mean()) is None or not math.isclose(mean, value, rel_tol=1e-6, abs_tol=1e-6):
        return None
    clusters = [it.cluster for it in items.items] if items.clustered else None
    return mean_interval([it.value for it in items.items], clusters, items.bounds)


def _from_verdicts(run: Run, task: str, rate: float) -> None:
    """An older judged run (results.json without ``judged_items``) or a re-judge row: every judged metric (ALL and
    VALID, failures, items) and its interval from the logged verdicts, by :func:`llamavid_eval.core.scores.judged_scores`,
    the function the tasks call; numbers results.json holds are kept as lmms-eval printed them."""
    values = run.metrics[task]
    if "judged_items" in values or task not in run.samples:
        return
    try:
        found = judged_items(s for s in iter_samples(run.samples[task]) if s.get("task", task) == task)
    except (OSError, ValueError) as exc:
        run.notes.append(f"{task}: samples not used ({exc})")
        return
    if not found:
        return
    result = judged_scores([verdict for _, verdict, _ in found], rate)
    for metric, value in result.values().items():
        if metric in (*HEADLINE, *COUNTS) and metric not in values:
            values[metric] = number(value)
            run.higher_is_better[task][metric] = metric != "judge_failures"
    for metric in HEADLINE:
        written = "ci_low" in run.uncertainty.get(task, {}).get(metric, {})
        if values.get(metric) is not None and not written:
            run.intervals.setdefault(task, {})[metric] = result.intervals[metric]


def _apply_budget(run: Run, task: str, rate: float) -> None:
    """Over the judge failure budget, a task's judged metrics are withheld (shown as a judge failure, not ranked)."""
    values = run.metrics[task]
    failures, items = values.get("judge_failures"), values.get("judged_items") or run.n_samples.get(task, (None,))[0]
    if not over_budget(failures, items, rate):
        return
    run.withheld[task] = f"judge failed on {int(failures)} of {int(items)} items"  # type: ignore[arg-type]
    for metric in HEADLINE:
        if metric in values:
            values[metric] = None
            run.intervals.get(task, {}).pop(metric, None)
    run.notes.append(
        f"{task}: {run.withheld[task]} (> {MAX_FAILURE_RATE_ENV}={rate:g}): judged metrics withheld; "
        "re-judge with `llamavid judge rejudge`"
    )


def _read_samples(run: Run, configs: dict[str, Any]) -> None:
    """Judge names from the logged samples; an unreadable file becomes a note, not a crash."""
    for task in run.metrics:
        names: set[str] = set()
        if task in run.samples:
            try:
                names = judge_names(run.samples[task])
            except (OSError, ValueError) as exc:
                run.notes.append(f"{task}: samples not used ({exc})")
                del run.samples[task]
        run.task_judges[task] = ", ".join(sorted(names)) or _config_judge(configs.get(task))


def _annotate(run: Run, config: dict[str, Any]) -> None:
    """Notes that make a partial run visible next to its numbers."""
    if not run.metrics:
        run.notes.append("no results (failed run?)")
    if config.get("limit") not in (None, -1, -1.0):
        run.notes.append(f"limit={config['limit']}")
    for task, (effective, original) in run.n_samples.items():
        if effective is not None and original and effective < original:
            run.notes.append(f"{task}: {effective}/{original} docs")
    for task, values in run.metrics.items():
        missing = [m for m, v in values.items() if v is None]
        if missing:
            run.notes.append(f"{task}: no value for {', '.join(missing)}")


def load_rejudge(path: Path, base: Run | None, max_failure_rate: float | None = None) -> Run:
    """A re-judged run as its own row: the original run's configuration, the new judge's metrics."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info, results = data["rejudge"], data["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable re-judge summary ({exc})") from exc
    if not isinstance(info, dict) or not isinstance(results, dict):
        raise ValueError(f"{path}: not a re-judge summary ('rejudge' and 'results' must be mappings)")
    judge = str(info.get("judge") or "?")
    run = Run(
        kind="measured",
        source=str(path),
        model="?",
        checkpoint=short_checkpoint(str(info.get("model_dir") or "")) or "?",
    )
    if base is not None:
        run = Run(
            **{
                **base.__dict__,
                "source": str(path),
                "metrics": {},
                "stderr": {},
                "higher_is_better": {},
                "samples": {},
                "task_judges": {},
                "intervals": {},
                "withheld": {},
                "notes": [],
            }
        )
    run.date = _created_utc(info.get("created"), path)
    run.judge = judge
    items = path.with_name(path.name.replace("_summary.json", "_items.jsonl"))
    for task, summary in results.items():
        if not isinstance(summary, dict):
            continue
        run.metrics[task] = {
            "accuracy": number(summary.get("accuracy")),
            "mean_score": number(summary.get("mean_score")),
            "judge_failures": number(summary.get("failures")),
        }
        run.higher_is_better[task] = {"accuracy": True, "mean_score": True, "judge_failures": False}
        run.task_judges[task] = judge
        run.n_samples[task] = (_as_int(str(summary.get("n", ""))), None)
        if items.is_file():
            run.samples[task] = items
    run.notes.append(f"re-judged from {base.date if base else info.get('date_id', '?')} predictions")
    _finish(run, max_failure_rate)
    return run


def _created_utc(created: Any, path: Path) -> str:
    """The re-judge's ``created`` (ISO 8601 with offset, written in UTC) as a UTC date; else the file time."""
    try:
        when = datetime.fromisoformat(str(created))
    except ValueError:
        when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime(DATE_FORMAT)


def load_runs(paths: list[str | Path], max_failure_rate: float | None = None) -> tuple[list[Run], list[str]]:
    """Every readable run under ``paths`` plus human-readable warnings for what was skipped; judged tasks over
    the failure budget (default ``$LLAMAVID_JUDGE_MAX_FAILURE_RATE``) are withheld."""
    runs: list[Run] = []
    files, problems = find_result_files(paths)
    by_stamp: dict[tuple[Path, str], Run] = {}
    for path in files:
        try:
            runs.append(load_run(path, max_failure_rate))
            by_stamp[(path.parent, results_stamp(path))] = runs[-1]
        except ValueError as exc:
            problems.append(str(exc))
    summaries = {
        p
        for item in map(Path, paths)
        if item.is_dir()
        for p in item.rglob("*_summary.json")
        if _REJUDGE_SUMMARY.match(p.name)
    }
    for path in sorted(summaries):
        match = _REJUDGE_SUMMARY.match(path.name)
        try:
            base = by_stamp.get((path.parent, match.group("ts"))) if match else None
            runs.append(load_rejudge(path, base, max_failure_rate))
        except ValueError as exc:
            problems.append(str(exc))
    if not files:
        problems.append("no lmms-eval results files (*_results.json) found")
    return runs, problems


# --- reported numbers (paper, reproduction study), kept as data (reference.csv): a new paper number is a
# one-line change reviewed like any other.

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
