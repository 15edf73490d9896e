"""Read lmms-eval output folders into :class:`Run` objects.

lmms-eval 0.7.x writes ``<output_path>/<sanitized model>/<YYYYmmdd_HHMMSS>_results.json`` and, with
``--log_samples``, ``<ts>_samples_<task>.jsonl`` beside it (``loggers/evaluation_tracker.py``). Older
harness versions wrote ``results_<ts>.json`` / ``samples_<task>_<ts>.jsonl``; both are accepted. Metric
keys look like ``accuracy,none`` with ``accuracy_stderr,none`` beside them; a value that could not be
computed is ``"N/A"`` or absent. Such values stay *missing* (``None``) here and are never turned into 0.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llamavid_eval.results import samples as samples_mod

_NEW_RESULTS = re.compile(r"^(?P<ts>.+)_results\.json$")
_OLD_RESULTS = re.compile(r"^results_(?P<ts>.+)\.json$")
#: ``llamavid judge rejudge`` output beside a run (judges/rejudge.py): same predictions, another judge.
_REJUDGE_SUMMARY = re.compile(r"^(?P<ts>.*?)_?rejudge_(?P<judge>.+)_summary\.json$")
#: Per-task keys in ``results[task]`` that are not metrics.
_NON_METRIC = {"alias", "samples", " ", ""}
_JUDGE_KEYS = ("judge", "judge_name")


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
    higher_is_better: dict[str, dict[str, bool | None]] = field(default_factory=dict)
    n_samples: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)  # effective, original
    samples: dict[str, Path] = field(default_factory=dict)  # task -> samples jsonl
    task_judges: dict[str, str] = field(default_factory=dict)  # task -> judge name ("" = not judged)
    notes: list[str] = field(default_factory=list)

    def config_key(self) -> tuple:
        """Runs with the same key are repeats of one configuration; the judge is per task, see table.merge_latest."""
        return (self.kind, self.source if self.kind == "reported" else "", self.model, self.checkpoint_path or self.checkpoint, self.fps, self.max_frames, self.extra_args)


def parse_model_args(model_args: Any) -> dict[str, str]:
    """``pretrained=x,fps=1`` (or a dict, which simple_evaluate also accepts) -> dict of strings."""
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    out: dict[str, str] = {}
    for part in str(model_args or "").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def short_checkpoint(path: str) -> str:
    """Readable checkpoint name: HF repo name or folder name (``run/checkpoint-500`` keeps its parent)."""
    parts = [p for p in path.rstrip("/").split("/") if p]
    if not parts:
        return ""
    if re.fullmatch(r"checkpoint-\d+", parts[-1]) and len(parts) > 1:
        return "/".join(parts[-2:])
    return parts[-1]


def _number(value: Any) -> float | None:
    """Metric value or None: ``"N/A"``, None, NaN, strings and containers are missing, not 0."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return None


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


def _format_date(raw: Any, ts: str, path: Path) -> str:
    """lmms-eval writes ``20250101_120000``; lm-eval wrote a POSIX time; fall back to the file time."""
    if isinstance(raw, (int, float)) and raw > 0:
        return datetime.fromtimestamp(raw).strftime("%Y-%m-%d %H:%M:%S")
    for text in (str(raw or ""), ts):
        for fmt in ("%Y%m%d_%H%M%S", "%Y-%m-%dT%H-%M-%S.%f", "%Y-%m-%dT%H-%M-%S", "%Y-%m-%d_%H-%M-%S"):
            try:
                return datetime.strptime(text, fmt).strftime("%Y-%m-%d %H:%M:%S")
            except ValueError:
                continue
    return datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")


def _split_key(key: str) -> tuple[str, str]:
    """``accuracy,none`` -> (``accuracy``, ``none``); keys without a filter (old format) get ``none``."""
    metric, _, filt = key.partition(",")
    return metric.strip(), (filt.strip() or "none")


def parse_task_metrics(task_results: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, float]]:
    """Metric values and their (plain) stderr for one ``results[task]`` block."""
    values: dict[str, float | None] = {}
    errors: dict[str, float] = {}
    for key, raw in task_results.items():
        if key in _NON_METRIC or isinstance(raw, (dict, list)):
            continue
        metric, filt = _split_key(key)
        name_suffix = "" if filt == "none" else f"[{filt}]"
        if "_stderr" in metric:
            base, _, kind = metric.partition("_stderr")
            if kind == "" and (number := _number(raw)) is not None:
                errors[base + name_suffix] = number
            continue
        if isinstance(raw, str) and raw not in ("N/A", ""):
            continue  # e.g. submission file paths: not a metric
        values[metric + name_suffix] = _number(raw)
    return values, errors


def find_result_files(paths: list[str | Path]) -> list[Path]:
    """All results.json files under the given folders (or the files themselves), sorted by path."""
    found: set[Path] = set()
    for item in map(Path, paths):
        if item.is_file():
            found.add(item)
        elif item.is_dir():
            for candidate in item.rglob("*.json"):
                if _NEW_RESULTS.match(candidate.name) or _OLD_RESULTS.match(candidate.name):
                    found.add(candidate)
        else:
            warnings.warn(f"{item}: no such file or folder", stacklevel=2)
    return sorted(found)


def _timestamp(path: Path) -> str:
    match = _NEW_RESULTS.match(path.name) or _OLD_RESULTS.match(path.name)
    return match.group("ts") if match else path.stem


def find_samples(results_file: Path) -> dict[str, Path]:
    """Samples files logged in the same run as ``results_file`` (same timestamp, same folder)."""
    ts = _timestamp(results_file)
    out: dict[str, Path] = {}
    for candidate in results_file.parent.glob("*.jsonl"):
        name = candidate.name
        if name.startswith(f"{ts}_samples_"):
            out[name[len(ts) + len("_samples_") : -len(".jsonl")]] = candidate
        elif name.startswith("samples_") and name.endswith(f"_{ts}.jsonl"):
            out[name[len("samples_") : -len(f"_{ts}.jsonl")]] = candidate
    return out


def _config_judge(cfg: Any) -> str:
    """Judge name a task config declares (``metadata`` or ``lmms_eval_specific_kwargs``), else ""."""
    if not isinstance(cfg, dict):
        return ""
    kwargs = cfg.get("lmms_eval_specific_kwargs")
    spots = [cfg.get("metadata"), kwargs] + ([v for v in kwargs.values() if isinstance(v, dict)] if isinstance(kwargs, dict) else [])
    for spot in spots:
        if not isinstance(spot, dict):
            continue
        backend = spot.get("judge_backend") or next((spot[k] for k in _JUDGE_KEYS if isinstance(spot.get(k), str) and spot[k]), None)
        model = spot.get("judge_model")
        if backend and ":" in str(backend):
            return str(backend)
        if backend or model:  # tasks/*: metadata {judge: openai, judge_model: gpt-3.5-turbo}; env may override
            return samples_mod.judge_label(backend or "?", model or "?")
    return ""


def load_run(path: Path) -> Run:
    """Parse one results.json (raises ValueError when it is not an lmms-eval results file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable results file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results", {}), dict):
        raise ValueError(f"{path}: not an lmms-eval results file")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    args = parse_model_args(config.get("model_args", ""))
    ckpt_path = args.pop("pretrained", "") or str(data.get("model_name") or "")
    fps, max_frames = _as_float(args.pop("fps", None)), _as_int(args.pop("max_frames", None))
    extra = [f"{k}={v}" for k, v in sorted(args.items())]
    if config.get("gen_kwargs"):
        extra.append(f"gen_kwargs={config['gen_kwargs']}")
    run = Run(
        kind="measured",
        source=str(path),
        model=str(config.get("model") or data.get("model_source") or "?"),
        checkpoint=short_checkpoint(ckpt_path) or "?",
        checkpoint_path=ckpt_path,
        fps=fps,
        max_frames=max_frames,
        date=_format_date(data.get("date"), _timestamp(path), path),
        extra_args=",".join(extra),
        samples=find_samples(path),
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
        run.higher_is_better[task] = {m: hib.get(task, {}).get(m.split("[")[0]) for m in values}
        counts = n_samples.get(task) or {}
        effective = counts.get("effective", block.get("samples"))
        run.n_samples[task] = (_as_int(effective), _as_int(counts.get("original")))
    _annotate(run, config)
    configs = data.get("configs") or {}
    for task in run.metrics:
        from_samples = samples_mod.judge_names(run.samples[task]) if task in run.samples else set()
        run.task_judges[task] = ", ".join(sorted(from_samples)) or _config_judge(configs.get(task))
    for task, sample_path in run.samples.items():
        if task in run.metrics and not any("fail" in m for m in run.metrics[task]):
            failures = samples_mod.count_failures(sample_path)
            if failures is not None:
                run.metrics[task]["judge_failures"] = float(failures)
                run.higher_is_better[task]["judge_failures"] = False
    run.judge = ", ".join(sorted({j for j in run.task_judges.values() if j}))
    return run


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


def load_rejudge(path: Path, base: Run | None) -> Run:
    """A re-judged run as its own row: the original run's configuration, the new judge's metrics."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info, results = data["rejudge"], data["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable re-judge summary ({exc})") from exc
    judge = str(info.get("judge") or "?")
    run = Run(kind="measured", source=str(path), model="?", checkpoint=short_checkpoint(str(info.get("model_dir") or "")) or "?")
    if base is not None:
        run = Run(**{**base.__dict__, "source": str(path), "metrics": {}, "stderr": {}, "higher_is_better": {}, "samples": {}, "task_judges": {}, "notes": []})
    run.date = _format_date(str(info.get("created", ""))[:19].replace(":", "-"), "", path)
    run.judge = judge
    items = path.with_name(path.name.replace("_summary.json", "_items.jsonl"))
    for task, summary in results.items():
        if not isinstance(summary, dict):
            continue
        run.metrics[task] = {"accuracy": _number(summary.get("accuracy")), "mean_score": _number(summary.get("mean_score")), "judge_failures": _number(summary.get("failures"))}
        run.higher_is_better[task] = {"accuracy": True, "mean_score": True, "judge_failures": False}
        run.task_judges[task] = judge
        run.n_samples[task] = (_as_int(str(summary.get("n", ""))), None)
        if items.is_file():
            run.samples[task] = items
    run.notes.append(f"re-judged from {base.date if base else info.get('date_id', '?')} predictions")
    return run


def load_runs(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """Every readable run under ``paths`` plus human-readable warnings for what was skipped."""
    runs: list[Run] = []
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = find_result_files(paths)
    problems += [str(w.message) for w in caught]
    by_stamp: dict[tuple[Path, str], Run] = {}
    for path in files:
        try:
            runs.append(load_run(path))
            by_stamp[(path.parent, _timestamp(path))] = runs[-1]
        except ValueError as exc:
            problems.append(str(exc))
    summaries = {p for item in map(Path, paths) if item.is_dir() for p in item.rglob("*_summary.json") if _REJUDGE_SUMMARY.match(p.name)}
    for path in sorted(summaries):
        match = _REJUDGE_SUMMARY.match(path.name)
        try:
            runs.append(load_rejudge(path, by_stamp.get((path.parent, match.group("ts"))) if match else None))
        except ValueError as exc:
            problems.append(str(exc))
    if not files:
        problems.append("no lmms-eval results files (*_results.json) found")
    return runs, problems
