"""Judge comparison: the same predictions under two judges, item by item.

The agreement statistics belong to the judge layer (``llamavid_eval.judges.agreement.compare(a, b) -> dict`` over
aligned per-item judgement records); :func:`local_compare` is a small stand-in with the same
contract, used only while that module is absent, so that this view works either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from llamavid_eval.results.load import Run
from llamavid_eval.results.samples import judgements

VERDICT_LABELS = ["yes", "no", "failed"]


def _failed(record: dict[str, Any]) -> bool:
    return bool(record.get("failed")) or record.get("verdict") is None


def _verdict_label(record: dict[str, Any]) -> str:
    return "failed" if _failed(record) else ("yes" if record["verdict"] else "no")


def local_compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement of two aligned judgement lists: raw agreement, Cohen's kappa, score distance, failures."""
    if len(a) != len(b):
        raise ValueError("judgement lists must be aligned (same length, same items)")
    valid = [(x, y) for x, y in zip(a, b, strict=True) if not _failed(x) and not _failed(y)]
    out: dict[str, Any] = {
        "n": len(a),
        "n_both_valid": len(valid),
        "failed_a": sum(_failed(x) for x in a),
        "failed_b": sum(_failed(y) for y in b),
        "verdict_agreement": None,
        "cohen_kappa": None,
        "yes_rate_a": None,
        "yes_rate_b": None,
        "score_mae": None,
        "score_exact_agreement": None,
    }
    if valid:
        va = [bool(x["verdict"]) for x, _ in valid]
        vb = [bool(y["verdict"]) for _, y in valid]
        n = len(valid)
        observed = sum(p == q for p, q in zip(va, vb, strict=True)) / n
        pa, pb = sum(va) / n, sum(vb) / n
        expected = pa * pb + (1 - pa) * (1 - pb)
        out.update(verdict_agreement=observed, yes_rate_a=pa, yes_rate_b=pb)
        out["cohen_kappa"] = (observed - expected) / (1 - expected) if expected < 1 else (1.0 if observed == 1 else None)
    scored = [(x["score"], y["score"]) for x, y in valid if isinstance(x.get("score"), (int, float)) and isinstance(y.get("score"), (int, float))]
    if scored:
        out["score_mae"] = sum(abs(p - q) for p, q in scored) / len(scored)
        out["score_exact_agreement"] = sum(p == q for p, q in scored) / len(scored)
    return out


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """Statistics from ``llamavid_eval.judges.agreement.compare`` when installed, else :func:`local_compare`; plus which one."""
    try:
        from llamavid_eval.judges.agreement import compare as judges_compare  # written in parallel by the judge layer
    except ImportError:
        return local_compare(a, b), "llamavid_eval.results.agreement.local_compare (llamavid_eval.judges.agreement not available)"
    return dict(judges_compare(a, b)), "llamavid_eval.judges.agreement.compare"


def verdict_matrix(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[list[int]]:
    """3x3 counts, rows = judge A's yes/no/failed, columns = judge B's."""
    matrix = [[0] * 3 for _ in VERDICT_LABELS]
    for x, y in zip(a, b, strict=True):
        matrix[VERDICT_LABELS.index(_verdict_label(x))][VERDICT_LABELS.index(_verdict_label(y))] += 1
    return matrix


@dataclass
class JudgePair:
    """Aligned judgements of one task's predictions by two judges."""

    task: str
    label: str  # which configuration (checkpoint, fps)
    judge_a: str
    judge_b: str
    ids: list[str] = field(default_factory=list)
    a: list[dict[str, Any]] = field(default_factory=list)
    b: list[dict[str, Any]] = field(default_factory=list)
    prediction_mismatches: int = 0  # items left out: not the same prediction, so not comparable

    @property
    def title(self) -> str:
        return f"{self.task} · {self.label}: {self.judge_a} vs {self.judge_b}"


def align(task: str, label: str, judge_a: str, records_a: dict[str, dict], judge_b: str, records_b: dict[str, dict]) -> JudgePair:
    """Pair items by id; items whose predictions differ are counted, not compared."""
    pair = JudgePair(task=task, label=label, judge_a=judge_a, judge_b=judge_b)
    for item_id in sorted(set(records_a) & set(records_b), key=_natural):
        ra, rb = records_a[item_id], records_b[item_id]
        if str(ra.get("prediction", "")).strip() != str(rb.get("prediction", "")).strip():
            pair.prediction_mismatches += 1
            continue
        pair.ids.append(item_id)
        pair.a.append({**ra, "task": task, "doc_id": item_id, "judge": judge_a})
        pair.b.append({**rb, "task": task, "doc_id": item_id, "judge": judge_b})
    return pair


def _natural(item_id: str) -> tuple[float, str]:
    return (int(item_id), "") if item_id.isdigit() else (math.inf, item_id)


def find_pairs(runs: list[Run]) -> list[JudgePair]:
    """Every (task, configuration) judged by two different judges, in one run or across runs."""
    by_config: dict[tuple, dict[str, dict[str, dict]]] = {}
    labels: dict[tuple, str] = {}
    for run in runs:
        if run.kind != "measured":
            continue
        for task, path in run.samples.items():
            key = (task, run.model, run.checkpoint_path, run.fps, run.max_frames, run.extra_args)
            labels[key] = f"{run.checkpoint}, fps={'?' if run.fps is None else f'{run.fps:g}'}"
            for judge, records in judgements(path, task=task).items():
                by_config.setdefault(key, {}).setdefault(judge, records)
    pairs = []
    for key, judged in by_config.items():
        names = sorted(judged)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                pair = align(key[0], labels[key], first, judged[first], second, judged[second])
                if pair.ids:
                    pairs.append(pair)
    return pairs


def pair_from_files(path_a: Path, path_b: Path, task: str = "") -> JudgePair:
    """Two samples files (e.g. a run and its re-judged copy); each must hold one judge's records."""
    ja, jb = judgements(path_a), judgements(path_b)
    if not ja or not jb:
        raise ValueError(f"no judgement records in {path_a if not ja else path_b}")
    (name_a, recs_a), (name_b, recs_b) = next(iter(ja.items())), next(iter(jb.items()))
    if name_a == name_b:
        name_a, name_b = f"{name_a} ({path_a.name})", f"{name_b} ({path_b.name})"
    return align(task or path_a.stem, "files", name_a, recs_a, name_b, recs_b)


def side_by_side(pair: JudgePair) -> pd.DataFrame:
    """One row per item, disagreements first: what a human checks when two judges differ."""
    rows = []
    for item_id, ra, rb in zip(pair.ids, pair.a, pair.b, strict=True):
        la, lb = _verdict_label(ra), _verdict_label(rb)
        rows.append(
            {
                "id": item_id,
                "question": ra.get("question", ""),
                "answer": ra.get("answer", ""),
                "prediction": ra.get("prediction", ""),
                f"verdict A ({pair.judge_a})": la,
                "score A": ra.get("score"),
                f"verdict B ({pair.judge_b})": lb,
                "score B": rb.get("score"),
                "agree": la == lb,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("agree", kind="stable").reset_index(drop=True)


def flat_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Scalar statistics; a dict of scalars (e.g. ``confusion``) becomes ``confusion.yes_no`` entries."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, (int, float, str, bool)) or v is None})
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def stats_markdown(pair: JudgePair, stats: dict[str, Any], provider: str) -> str:
    """Key/value table of the agreement statistics."""
    lines = [f"### {pair.title}", "", f"statistics from `{provider}`; {len(pair.ids)} items compared"]
    if pair.prediction_mismatches:
        lines[-1] += f", {pair.prediction_mismatches} left out (different predictions)"
    lines += ["", "| statistic | value |", "|---|---:|"]
    for key, value in flat_stats(stats).items():
        shown = "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines) + "\n"
