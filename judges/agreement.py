"""How much two judges agree on the same items: the number that says whether a judge swap is safe.

The one agreement implementation of the suite (``llamavid judge agree``, ``judge swap``, the
leaderboard's HTML page). The study saw MSVD-QA move ten points when GPT-3.5 was replaced by
Llama-3; this module makes that comparison routine and says how sure it is: every rate comes with a
95% cluster-bootstrap interval (items about one video resampled together, when the records name the
video), the accuracy shift with a paired interval and an exact McNemar test. Items are matched by
task, document/item id and the exact (question, answer, prediction) text, so two re-judgings of one
run line up whatever folders they were written to. Items one judge failed are reported separately
(``failed_a`` / ``failed_b``), never dropped silently and never counted as "no".
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from llamavid_eval.core.outputs import find_samples, iter_samples, judged_records, judgement_failed
from llamavid_eval.core.records import VIDEO_KEY
from llamavid_eval.core.stats import (
    PERCENT,
    Interval,
    bootstrap_statistic,
    cluster_bootstrap_mean,
    cohen_kappa,
    mcnemar_exact,
    paired_difference,
)
from llamavid_eval.judges.prompt import SCORE_RANGE
from llamavid_eval.judges.rejudge import ITEMS_SUFFIX

Rows = Sequence[dict[str, Any]]


def load_items(source: str | Path) -> list[dict[str, Any]]:
    """Per-item judgement rows of ONE judge: a re-judge ``*_items.jsonl``, a folder of them, or an lmms-eval
    samples file (or folder) whose records carry judgements."""
    path = Path(source)
    if path.is_dir():
        files = sorted(path.rglob(f"*_rejudge_*{ITEMS_SUFFIX}"))
        rows = [r for f in files for r in iter_samples(f)]
        if not files:
            rows = _rows_from_samples(path)
    elif path.is_file():
        rows = list(iter_samples(path))
        files = [path]
        if rows and "task" not in rows[0]:
            rows = _rows_from_samples(path)
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")
    judges = sorted({str(r.get("judge")) for r in rows})
    if len(judges) > 1:
        raise ValueError(
            f"{path} holds judgements of several judges ({', '.join(judges)}); pass one items file "
            f"instead: {', '.join(str(f) for f in files)}"
        )
    return rows


def _rows_from_samples(path: Path) -> list[dict[str, Any]]:
    """Judgement rows from logged samples (the judgement the run itself made at aggregation time)."""
    rows: list[dict[str, Any]] = []
    for sf in find_samples(path):
        for position, sample in enumerate(iter_samples(sf.path)):
            found = judged_records(sample)
            if found:
                _, rec = found[0]  # one record per item: the metric keys of a line hold the same judgement
                rows.append(
                    {
                        **rec,
                        "task": sf.task,
                        "doc_id": sample.get("doc_id", position),
                        "id": rec.get("id", sample.get("doc_id", position)),
                        "failed": judgement_failed(rec),
                    }
                )
    if not rows:
        raise FileNotFoundError(
            f"no judgement records under {path}: pass `judge rejudge` items files or samples files of a judged task"
        )
    return rows


def _keys(rows: Rows) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by match key; the n-th repeat of one key is keyed apart from the first."""
    seen: Counter[tuple[Any, ...]] = Counter()
    out = {}
    for r in rows:
        text = json.dumps([r.get("question"), r.get("answer"), r.get("prediction")], ensure_ascii=False)
        base = (
            r.get("task"),
            json.dumps(r.get("doc_id"), default=str),
            json.dumps(r.get("id"), default=str),
            hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )
        out[(*base, seen[base])] = r
        seen[base] += 1
    return out


def ok(r: dict[str, Any]) -> bool:
    return not judgement_failed(r)


def clusters_of(rows: Rows) -> list[str] | None:
    """The video of each row when every row names one (cluster bootstrap), else None (items independent)."""
    videos = [r.get(VIDEO_KEY) for r in rows]
    return [str(v) for v in videos] if rows and all(v is not None for v in videos) else None


def _none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def pair_intervals(
    va: list[bool], vb: list[bool], sa: list[float], sb: list[float], clusters: list[str] | None
) -> dict[str, Interval]:
    """95% intervals of each judge's accuracy and score, their agreement, kappa, and B's shift from A."""
    ya, yb = np.array(va, dtype=float) * 100, np.array(vb, dtype=float) * 100
    return {
        "accuracy_a": cluster_bootstrap_mean(ya, clusters, bounds=PERCENT),
        "accuracy_b": cluster_bootstrap_mean(yb, clusters, bounds=PERCENT),
        "mean_score_a": cluster_bootstrap_mean(sa, clusters, bounds=SCORE_RANGE),
        "mean_score_b": cluster_bootstrap_mean(sb, clusters, bounds=SCORE_RANGE),
        "agreement": cluster_bootstrap_mean((ya == yb) * 100.0, clusters, bounds=PERCENT),
        "kappa": bootstrap_statistic(
            cohen_kappa, {"a": np.array(va), "b": np.array(vb)}, clusters, name="Cohen's kappa"
        ),
        "accuracy_shift": paired_difference(ya, yb, clusters),
        "score_shift": paired_difference(sa, sb, clusters),
    }


def compare(a: Rows | str | Path, b: Rows | str | Path, *, examples: int = 5) -> dict[str, Any]:
    """Agreement report between judgements ``a`` and ``b`` (rows as written by rejudge, or paths)."""
    rows_a = load_items(a) if isinstance(a, (str, Path)) else list(a)
    rows_b = load_items(b) if isinstance(b, (str, Path)) else list(b)
    ka, kb = _keys(rows_a), _keys(rows_b)
    matched = [k for k in ka if k in kb]
    both = [(ka[k], kb[k]) for k in matched if ok(ka[k]) and ok(kb[k])]
    failed = [(ka[k], kb[k]) for k in matched if not (ok(ka[k]) and ok(kb[k]))]
    va = [bool(x["verdict"]) for x, _ in both]
    vb = [bool(y["verdict"]) for _, y in both]
    sa = [float(x["score"]) for x, _ in both]
    sb = [float(y["score"]) for _, y in both]
    n = len(both)
    conf = {
        "yes_yes": sum(x and y for x, y in zip(va, vb, strict=True)),
        "yes_no": sum(x and not y for x, y in zip(va, vb, strict=True)),
        "no_yes": sum(not x and y for x, y in zip(va, vb, strict=True)),
        "no_no": sum(not x and not y for x, y in zip(va, vb, strict=True)),
    }
    disagree = sorted(
        ((x, y) for x, y in both if bool(x["verdict"]) != bool(y["verdict"])),
        key=lambda p: (-abs(p[0]["score"] - p[1]["score"]), str(p[0].get("task")), str(p[0].get("id"))),
    )
    clusters = clusters_of([x for x, _ in both])
    intervals = pair_intervals(va, vb, sa, sb, clusters) if n else {}
    return {
        "judge_a": _name(rows_a),
        "judge_b": _name(rows_b),
        "n_a": len(rows_a),
        "n_b": len(rows_b),
        "tasks_a": sorted({str(r.get("task")) for r in rows_a}),
        "tasks_b": sorted({str(r.get("task")) for r in rows_b}),
        "matched": len(matched),
        "only_in_a": len(ka) - len(matched),
        "only_in_b": len(kb) - len(matched),
        "failed_a": sum(1 for x, _ in failed if not ok(x)),
        "failed_b": sum(1 for _, y in failed if not ok(y)),
        "failed_both": sum(1 for x, y in failed if not ok(x) and not ok(y)),
        "n": n,
        "accuracy_a": 100.0 * sum(va) / n if n else None,
        "accuracy_b": 100.0 * sum(vb) / n if n else None,
        "mean_score_a": sum(sa) / n if n else None,
        "mean_score_b": sum(sb) / n if n else None,
        "agreement": 100.0 * (conf["yes_yes"] + conf["no_no"]) / n if n else None,
        "kappa": _none(cohen_kappa(va, vb)) if n else None,
        "pearson": pearson(sa, sb),
        "spearman": spearman(sa, sb),
        "mcnemar_p": mcnemar_exact(conf["yes_no"], conf["no_yes"]) if n else None,
        "confusion": conf,
        "intervals": {k: v.to_dict() for k, v in intervals.items()},
        "disagreements": [_example(x, y) for x, y in disagree[:examples]],
        "failed_items": [_example(x, y) for x, y in failed[:examples]],
    }


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r (scipy); ``None`` with fewer than two items or a constant side (r is undefined)."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(sps.pearsonr(x, y).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (scipy, average ranks for ties); ``None`` where Pearson's r would be."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(sps.spearmanr(x, y).statistic)


def _name(rows: Rows) -> str | None:
    names = sorted({str(r.get("judge")) for r in rows if r.get("judge")})
    return ", ".join(names) or None


def _example(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
    def side(r: dict[str, Any]) -> dict[str, Any]:
        return {"verdict": r.get("verdict"), "score": r.get("score"), "failed": not ok(r), "error": r.get("error")}

    return {
        "task": x.get("task"),
        "id": x.get("id"),
        "question": x.get("question"),
        "answer": x.get("answer"),
        "prediction": x.get("prediction"),
        "a": side(x),
        "b": side(y),
    }


def failure_count(report: dict[str, Any]) -> tuple[int, int]:
    """(matched items failed by either judge, matched items): what the exit status is decided on."""
    return report["failed_a"] + report["failed_b"] - report["failed_both"], report["matched"]


def _ci(report: dict[str, Any], key: str, digits: int) -> str:
    iv = report["intervals"].get(key)
    if not iv or not (math.isfinite(iv["low"]) and math.isfinite(iv["high"])):
        return "n/a"
    return f"{iv['low']:.{digits}f} to {iv['high']:.{digits}f}"


def to_markdown(report: dict[str, Any]) -> str:
    """The report for people: counts, metrics with 95% intervals, the 2x2 table and a few disagreements."""

    def f(v: float | None, d: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    c = report["confusion"]
    shift = None if report["n"] == 0 else report["accuracy_b"] - report["accuracy_a"]
    method = next(iter(report["intervals"].values()), {}).get("method", "no items")
    out = [
        "# Judge agreement",
        "",
        f"- A: `{report['judge_a']}` ({report['n_a']} items), B: `{report['judge_b']}` ({report['n_b']} items)",
        f"- matched items: {report['matched']} (only in A: {report['only_in_a']}, only in B: {report['only_in_b']})",
        f"- failed among matched: A {report['failed_a']}, B {report['failed_b']} (both {report['failed_both']}); "
        f"compared: {report['n']}",
        "",
        "| metric | value | 95% CI |",
        "|---|---:|---:|",
        f"| accuracy A (%) | {f(report['accuracy_a'], 2)} | {_ci(report, 'accuracy_a', 2)} |",
        f"| accuracy B (%) | {f(report['accuracy_b'], 2)} | {_ci(report, 'accuracy_b', 2)} |",
        f"| accuracy B - A (points) | {f(shift, 2)} | {_ci(report, 'accuracy_shift', 2)} |",
        f"| mean score A | {f(report['mean_score_a'])} | {_ci(report, 'mean_score_a', 3)} |",
        f"| mean score B | {f(report['mean_score_b'])} | {_ci(report, 'mean_score_b', 3)} |",
        f"| agreement on yes/no (%) | {f(report['agreement'], 2)} | {_ci(report, 'agreement', 2)} |",
        f"| Cohen's kappa | {f(report['kappa'])} | {_ci(report, 'kappa', 3)} |",
        f"| McNemar exact p (yes/no) | {f(report['mcnemar_p'], 4)} | |",
        f"| Pearson r (scores) | {f(report['pearson'])} | |",
        f"| Spearman rho (scores) | {f(report['spearman'])} | |",
        "",
        f"Intervals: {method}.",
        "",
        "| | B yes | B no |",
        "|---|---:|---:|",
        f"| **A yes** | {c['yes_yes']} | {c['yes_no']} |",
        f"| **A no** | {c['no_yes']} | {c['no_no']} |",
    ]
    for title, rows in (("Disagreements", report["disagreements"]), ("Failed by either judge", report["failed_items"])):
        if rows:
            out += ["", f"## {title} (first {len(rows)})", ""]
            for r in rows:
                out.append(
                    f"- [{r['task']} #{r['id']}] Q: {r['question']!r} | answer: {r['answer']!r} | "
                    f"prediction: {r['prediction']!r} -> A: {_side(r['a'])}, B: {_side(r['b'])}"
                )
    return "\n".join(out) + "\n"


def _side(s: dict[str, Any]) -> str:
    if s["failed"]:
        return f"FAILED ({s['error']})"
    return f"{'yes' if s['verdict'] else 'no'}/{s['score']}"
