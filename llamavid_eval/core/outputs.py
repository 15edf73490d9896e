"""The one reader of lmms-eval output folders: results files, logged samples, run configuration, time stamps.

lmms-eval 0.7.x writes ``<output_path>/<sanitized model>/<YYYYmmdd_HHMMSS>_results.json`` and, with
``--log_samples``, ``<same stamp>_samples_<task>.jsonl`` beside it (``loggers/evaluation_tracker.py``);
the model folder is absent when the model has no name argument. Older harness versions wrote
``results_<ts>.json`` / ``samples_<task>_<ts>.jsonl``; both are accepted. Metric keys look like
``accuracy,none`` with ``accuracy_stderr,none`` beside them; a value that could not be computed is
``"N/A"`` or absent and stays missing (``None``) here, never 0.

Each logged sample holds what the task's ``process_results`` returned under each metric key. Record
shapes we rely on (contracts with ``tasks/``): judged tasks ``{question, answer, prediction, ...}``
with the judgement flat (``verdict``, ``score``, ``failed``) or nested under ``judgement``
(``Judgement.to_dict()``); ``ucf_crime`` ``{gold, pred}``; the demo ``{..., correct}``.

Time stamps: lmms-eval names files with ``utils.get_datetime_str(timezone=...)``, whose default zone
is ``Asia/Singapore`` (UTC+8), and records the CLI's ``--timezone`` in ``config.resolved_cli_args``.
:func:`stamp_to_utc` turns a stamp back into UTC.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from llamavid_eval.core.records import QA_TEXT_KEYS

RESULTS_NEW = re.compile(r"^(?P<ts>.+)_results\.json$")
RESULTS_OLD = re.compile(r"^results_(?P<ts>.+)\.json$")
SAMPLES_NEW = re.compile(r"^(?P<ts>\d{8}_\d{6})_samples_(?P<task>.+)\.jsonl$")
SAMPLES_OLD = re.compile(r"^samples_(?P<task>.+)_(?P<ts>\d{4}-\d{2}-\d{2}T[\d.-]+)\.jsonl$")
#: The zone lmms-eval 0.7 writes its file-name stamps in unless ``--timezone`` said otherwise.
LMMS_DEFAULT_TIMEZONE = "Asia/Singapore"
#: Keys lmms-eval itself writes into a logged sample; everything else came from process_results.
HARNESS_KEYS = frozenset(
    {
        "doc_id",
        "doc",
        "target",
        "arguments",
        "resps",
        "filtered_resps",
        "token_counts",
        "doc_hash",
        "input",
        "input_media",
    }
)
#: A metric's interval as our tasks write it into results.json: ``<metric>_ci_low`` etc.; ``_n`` counts the
#: items, ``_clusters`` the videos they were resampled by (runs before it: none written, taken as ``_n``).
CI_PARTS = ("ci_low", "ci_high", "n", "clusters")
_NON_METRIC = {"alias", "samples", " ", ""}
_STAMP_FORMATS = ("%Y%m%d_%H%M%S", "%Y-%m-%dT%H-%M-%S.%f", "%Y-%m-%dT%H-%M-%S", "%Y-%m-%d_%H-%M-%S")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as ``null``: ``NaN`` is not JSON (strict parsers refuse it), and
    a number that is undefined (an interval with no items, Kendall's tau over tied runs) is said in words
    where people read it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def judge_label(backend: Any, model: Any) -> str:
    """How a judge is named everywhere: ``backend:model``, or ``exact-match`` for the offline matcher."""
    return "exact-match" if backend == "exact" else f"{backend}:{model}"


# --- results.json -------------------------------------------------------------------------------


def number(value: Any) -> float | None:
    """Metric value or None: ``"N/A"``, None, NaN, strings and containers are missing, not 0."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return None


def split_metric_key(key: str) -> tuple[str, str]:
    """``accuracy,none`` -> (``accuracy``, ``none``); keys without a filter (old format) get ``none``."""
    metric, _, filt = key.partition(",")
    return metric.strip(), (filt.strip() or "none")


def _metric_name(key: str) -> str:
    metric, filt = split_metric_key(key)
    return metric + ("" if filt == "none" else f"[{filt}]")


def parse_task_metrics(task_results: dict[str, Any]) -> tuple[dict[str, float | None], dict[str, float]]:
    """Metric values and their plain stderr for one ``results[task]`` block; a filter other than
    ``none`` is kept in the name as ``metric[filter]``. A metric's interval rows (``<metric>_ci_low``,
    ``_ci_high``, ``_n``, ``_clusters``, written by our tasks) are not metrics of their own: see :func:`parse_task_uncertainty`."""
    values: dict[str, float | None] = {}
    errors: dict[str, float] = {}
    for key, raw in task_results.items():
        if key in _NON_METRIC or isinstance(raw, (dict, list)):
            continue
        metric, _ = split_metric_key(key)
        name = _metric_name(key)
        if "_stderr" in metric:
            base, _, kind = name.partition("_stderr")
            if (kind == "" or kind.startswith("[")) and (value := number(raw)) is not None:
                errors[base + kind] = value  # the plain stderr; _stderr_clt/_clustered: parse_task_uncertainty
            continue
        if isinstance(raw, str) and raw not in ("N/A", ""):
            continue  # e.g. submission file paths: not a metric
        values[name] = number(raw)
    for name in [n for n in values if n + "_ci_low" in values and n + "_ci_high" in values]:
        for part in CI_PARTS:
            values.pop(f"{name}_{part}", None)
    return values, errors


def parse_task_uncertainty(task_results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """metric -> what lmms-eval and our tasks wrote about its uncertainty: ``stderr``,
    ``stderr_clustered`` (lmms-eval's ``cluster_key`` column), ``ci_low``/``ci_high``/``n``/``clusters``."""
    values, _ = parse_task_metrics({k: v for k, v in task_results.items() if "_stderr" not in k})
    out: dict[str, dict[str, float]] = {}
    for key, raw in task_results.items():
        if (value := number(raw)) is None or key in _NON_METRIC:
            continue
        name = _metric_name(key)
        for part in ("stderr_clustered", "stderr", *CI_PARTS):
            base, sep, rest = name.partition(f"_{part}")
            if sep and (rest == "" or rest.startswith("[")):
                if base + rest in values:
                    out.setdefault(base + rest, {})[part] = value
                break
    return out


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


def read_results(path: Path) -> dict[str, Any]:
    """One results.json as a dict; ValueError naming the file when it is not an lmms-eval results file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable results file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results", {}), dict):
        raise ValueError(f"{path}: not an lmms-eval results file (no 'results' mapping)")
    return data


def results_stamp(path: Path) -> str:
    """The stamp a results file is named with (``20250101_120000``), or its stem."""
    match = RESULTS_NEW.match(path.name) or RESULTS_OLD.match(path.name)
    return match.group("ts") if match else path.stem


def find_result_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """All results files under the given folders (or the files themselves), sorted; plus what was missing."""
    found: set[Path] = set()
    problems: list[str] = []
    for item in map(Path, paths):
        if item.is_file():
            found.add(item)
        elif item.is_dir():
            found.update(p for p in item.rglob("*.json") if RESULTS_NEW.match(p.name) or RESULTS_OLD.match(p.name))
        else:
            problems.append(f"{item}: no such file or folder")
    return sorted(found), problems


# --- samples files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplesFile:
    """One logged ``*_samples_<task>.jsonl``; ``date_id`` is the stamp it shares with its results file."""

    path: Path
    date_id: str
    task: str


def samples_file(path: Path) -> SamplesFile | None:
    """A samples file by its lmms-eval name (new or old style), else None."""
    match = SAMPLES_NEW.match(path.name) or SAMPLES_OLD.match(path.name)
    return SamplesFile(path, match["ts"], match["task"]) if match else None


def find_samples(path: str | Path) -> list[SamplesFile]:
    """Samples files under ``path`` (recursively) or ``path`` itself, in a stable order.

    A single file with another name still works: its stem is taken as the task name."""
    path = Path(path)
    if path.is_file():
        return [samples_file(path) or SamplesFile(path, "", path.stem)]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    found = [sf for p in sorted(path.rglob("*samples_*.jsonl")) if (sf := samples_file(p))]
    if not found:
        raise FileNotFoundError(
            f"no lmms-eval samples files (<date>_<time>_samples_<task>.jsonl) under {path}; "
            "was lmms-eval run with --log_samples?"
        )
    return found


def samples_beside(results_file: Path) -> dict[str, Path]:
    """task -> samples file logged in the same run as ``results_file`` (same folder, same stamp)."""
    stamp = results_stamp(results_file)
    return {
        sf.task: sf.path
        for p in sorted(results_file.parent.glob("*.jsonl"))
        if (sf := samples_file(p)) and sf.date_id == stamp
    }


def run_results(folder: Path, date_id: str, tasks: Iterable[str]) -> dict[str, Any]:
    """The ``results`` blocks of ``tasks`` in the run's results file (``<folder>/<date_id>_results.json``, or the
    old ``results_<date_id>.json``); empty when the file is missing or unreadable."""
    for path in (folder / f"{date_id}_results.json", folder / f"results_{date_id}.json"):
        if path.is_file():
            try:
                results = read_results(path).get("results", {})
            except ValueError:
                return {}
            return {t: results[t] for t in tasks if t in results}
    return {}


def iter_samples(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Logged samples in file order; a line that is not a JSON object raises ValueError naming file and line
    (a crashed run's half line must not be mistaken for a shorter run) or a file that is not UTF-8."""
    with path.open("rb") as handle:  # bytes, so a line that is not UTF-8 is named by its number
        for index, raw in enumerate(handle):
            if limit is not None and index >= limit:
                return
            if not raw.strip():
                continue
            try:
                sample = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{index + 1}: not UTF-8 ({err.reason}); lmms-eval writes UTF-8") from None
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{index + 1}: not JSON ({err}); re-run the task or delete the line") from None
            if not isinstance(sample, dict):
                raise ValueError(f"{path}:{index + 1}: not a JSON object")
            yield sample


def metric_records(sample: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The dict-valued metric entries of one logged sample (metric key -> record)."""
    return {k: v for k, v in sample.items() if k not in HARNESS_KEYS and isinstance(v, dict)}


def is_qa_record(value: Any) -> bool:
    """A record a judge can (re-)judge: question, answer and prediction as text or numbers."""
    return isinstance(value, dict) and all(
        isinstance(value.get(k), (str, int, float)) and not isinstance(value.get(k), bool) for k in QA_TEXT_KEYS
    )


def normalize_judgement(record: dict[str, Any]) -> dict[str, Any]:
    """Flat judgement record: a nested ``judgement`` lifted up, ``judge`` named."""
    nested = record.get("judgement")
    flat = {**record, **nested} if isinstance(nested, dict) else dict(record)
    if not flat.get("judge") and (flat.get("backend") or flat.get("model")):
        flat["judge"] = judge_label(flat.get("backend"), flat.get("model"))
    return flat


def is_judgement(record: dict[str, Any]) -> bool:
    return "prediction" in record and any(k in record for k in ("verdict", "failed", "score"))


def judgement_failed(record: dict[str, Any]) -> bool:
    """A judgement that gave no usable verdict and score: excluded from metrics, counted as a failure."""
    return bool(record.get("failed")) or record.get("verdict") is None or record.get("score") is None


def judged_records(sample: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(metric key, flat judgement) pairs of a samples line; a re-judge items line is itself one."""
    if is_judgement(sample) and "doc_id" in sample:
        return [("", normalize_judgement(sample))]
    flat = [(key, normalize_judgement(record)) for key, record in metric_records(sample).items()]
    return [(key, record) for key, record in flat if is_judgement(record)]


def judgements(path: Path, task: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """judge name -> item id -> judgement record of a samples (or re-judge items) file; items are keyed by
    ``doc_id`` (stable across runs)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for position, sample in enumerate(iter_samples(path)):
        if task is not None and sample.get("task", task) != task:
            continue
        item_id = str(sample.get("doc_id", position))
        for key, record in judged_records(sample):
            judge = str(record.get("judge") or key or "judge")
            out.setdefault(judge, {}).setdefault(item_id, record)
    return out


def judge_names(path: Path, peek: int = 50) -> set[str]:
    """Judges named in the first ``peek`` lines of a samples file (enough: one run uses one judge per task)."""
    names = set()
    for sample in iter_samples(path, limit=peek):
        for _, record in judged_records(sample):
            if isinstance(record.get("judge"), str) and record["judge"]:
                names.add(record["judge"])
    return names


# --- time stamps --------------------------------------------------------------------------------


def run_timezone(config: dict[str, Any]) -> str:
    """The zone the run's stamps were written in: ``--timezone`` when the CLI recorded it, else lmms-eval's default."""
    cli = config.get("resolved_cli_args") if isinstance(config, dict) else None
    zone = cli.get("timezone") if isinstance(cli, dict) else None
    return str(zone) if zone else LMMS_DEFAULT_TIMEZONE


def stamp_to_utc(stamp: str, zone: str = LMMS_DEFAULT_TIMEZONE) -> datetime | None:
    """An lmms-eval file-name stamp (local time of ``zone``) as an aware UTC datetime, None if unparseable."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {zone!r} in the run configuration ({err})") from None
    for fmt in _STAMP_FORMATS:
        try:
            return datetime.strptime(stamp, fmt).replace(tzinfo=tz).astimezone(timezone.utc)
        except ValueError:
            continue
    return None


def run_date_utc(raw: Any, stamp: str, config: dict[str, Any], path: Path) -> datetime:
    """When a run was written, in UTC: results ``date`` (a stamp, or a POSIX time for lm-eval), then the
    file-name stamp, then the file's modification time."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0:
        return datetime.fromtimestamp(raw, timezone.utc)
    zone = run_timezone(config)
    for text in (str(raw or ""), stamp):
        if text and (when := stamp_to_utc(text, zone)) is not None:
            return when
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
