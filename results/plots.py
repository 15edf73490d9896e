"""The study's pictures: UCF-Crime confusion matrix and per-class accuracy, accuracy vs fps, judge agreement.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas, no pyplot): no global backend state,
safe in headless CI and inside other programs. Every plot is written as PNG (HTML page) and SVG (papers).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llamavid_eval.core.ucf import confusion_counts, samples_pairs
from llamavid_eval.results.agreement import VERDICT_LABELS, JudgePair, verdict_matrix
from llamavid_eval.results.load import Run

#: Which metric stands for "accuracy" in the accuracy-vs-fps plot, in order of preference.
ACCURACY_METRICS = ["accuracy", "exact_match", "gpt_eval_accuracy", "acc"]


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``; returns both paths (PNG first)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, format=path.suffix[1:], facecolor="white")
    return paths


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "plot"


def confusion_matrix(pairs: list[tuple[str, str]], title: str, stem: Path) -> list[Path]:
    """Rows = true class, colour = share of that class's videos, numbers = counts."""
    gold_labels, pred_labels, rows = confusion_counts(pairs)
    counts = np.array(rows, dtype=int)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    fig = new_figure(9.5, 8)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(pred_labels)), pred_labels, rotation=60, ha="right")
    ax.set_yticks(range(len(gold_labels)), gold_labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for (row, col), count in np.ndenumerate(counts):
        if count:
            ax.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[row, col] > 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, label="share of true class", shrink=0.8)
    return save(fig, stem)


def per_class_accuracy(series: dict[str, list[tuple[str, str]]], stem: Path) -> list[Path]:
    """Grouped bars, one group per class, one bar per run; a 0 is labelled, a class without videos says n/a."""
    labels = confusion_counts([p for pairs in series.values() for p in pairs])[0]
    fig = new_figure(max(9.0, 0.6 * len(labels) * max(1, len(series)) ** 0.5), 5.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    present: Counter[str] = Counter()
    for index, (name, pairs) in enumerate(series.items()):
        total, right = Counter(g for g, _ in pairs), Counter(g for g, p in pairs if g == p)
        present.update(total)
        values = [100.0 * right[c] / total[c] if total[c] else math.nan for c in labels]
        positions = np.arange(len(labels)) + (index - (len(series) - 1) / 2) * width
        ax.bar(positions, values, width=width, label=name)
        for x, value in zip(positions, values, strict=True):
            if value == 0:
                ax.text(x, 1, "0", ha="center", va="bottom", fontsize=7)
    for x, label in enumerate(labels):
        if not present[label]:
            ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=7, color="grey")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("UCF-Crime per-class accuracy")
    ax.grid(axis="y", alpha=0.3)
    if series:
        fig.legend(loc="outside lower center", ncols=min(3, len(series)), fontsize=7)
    return save(fig, stem)


def fps_text(fps: float | None) -> str:
    return "?" if fps is None else f"{fps:g}"


def _accuracy_metric(metrics: dict[str, float | None]) -> str | None:
    for name in ACCURACY_METRICS:
        if name in metrics:
            return name
    return next((m for m in metrics if "acc" in m), None)


Point = tuple[float, float, float | None, float | None]  # fps, value, 95% CI low, high (None: no interval)


def fps_points(runs: list[Run]) -> dict[str, dict[str, list[Point]]]:
    """task -> series label -> points sorted by fps; runs without fps or value are skipped."""
    out: dict[str, dict[str, list[Point]]] = {}
    for run in runs:
        if run.fps is None:
            continue
        for task, metrics in run.metrics.items():
            metric = _accuracy_metric(metrics)
            if metric is None or metrics[metric] is None:
                continue
            judge = run.task_judges.get(task, "")
            label = (
                f"{run.checkpoint}"
                + (f" [{judge}]" if judge else "")
                + (" (reported)" if run.kind == "reported" else "")
            )
            interval = run.intervals.get(task, {}).get(metric)
            low, high = (
                (interval.low, interval.high) if interval and math.isfinite(interval.half_width) else (None, None)
            )
            point = (run.fps, float(metrics[metric]), low, high)
            out.setdefault(f"{task}/{metric}", {}).setdefault(label, []).append(point)
    # a set: an unjudged task is repeated in each judge's row of its configuration
    return {task: {k: sorted(set(v)) for k, v in series.items()} for task, series in sorted(out.items())}


def accuracy_vs_fps(runs: list[Run], stem: Path) -> list[Path]:
    """One panel per task, error bars = 95% intervals; reported numbers (no interval) dashed with hollow
    markers. Empty list when no run has fps."""
    data = fps_points(runs)
    if not data:
        return []
    cols = min(3, len(data))
    rows = math.ceil(len(data) / cols)
    fig = new_figure(5.2 * cols, 3.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (column, series) in zip(axes, data.items(), strict=False):
        for label, points in series.items():
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            below = [y - p[2] if p[2] is not None else 0.0 for y, p in zip(ys, points, strict=True)]
            above = [p[3] - y if p[3] is not None else 0.0 for y, p in zip(ys, points, strict=True)]
            reported = label.endswith("(reported)")
            ax.errorbar(
                xs,
                ys,
                yerr=[below, above],
                capsize=3,
                linestyle="--" if reported else "-",
                marker="o",
                markerfacecolor="none" if reported else None,
                label=label,
            )
        ax.set_title(column)
        ax.set_xlabel("frames per second")
        ax.set_ylabel(f"{column.split('/')[1]} (bars: 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[len(data) :]:
        ax.set_visible(False)
    return save(fig, stem)


def agreement_matrix(pair: JudgePair, stem: Path) -> list[Path]:
    """3x3 verdict counts (yes/no/failed) of judge A (rows) against judge B (columns)."""
    matrix = np.array(verdict_matrix(pair.a, pair.b))
    fig = new_figure(5.2, 4.6)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Greens")
    ax.set_xticks(range(3), VERDICT_LABELS)
    ax.set_yticks(range(3), VERDICT_LABELS)
    ax.set_xlabel(f"B: {pair.judge_b}")
    ax.set_ylabel(f"A: {pair.judge_a}")
    ax.set_title(f"{pair.task} ({pair.label})", fontsize=9)
    peak = matrix.max() or 1
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    return save(fig, stem)


def make_all(runs: list[Run], pairs: list[JudgePair], out_dir: Path) -> list[tuple[str, list[Path]]]:
    """Every plot the data supports, as (caption, [png, svg]) in page order."""
    made: list[tuple[str, list[Path]]] = []
    for stale in [*out_dir.glob("*.png"), *out_dir.glob("*.svg")] if out_dir.is_dir() else []:
        stale.unlink()  # the folder is ours; plots of runs no longer shown must not linger
    ucf: dict[str, list[tuple[str, str]]] = {}
    seen: set[Path] = set()  # one configuration's ucf_crime samples can back several rows (one per judge)
    for run in runs:
        if run.kind == "measured" and "ucf_crime" in run.samples and run.samples["ucf_crime"] not in seen:
            seen.add(run.samples["ucf_crime"])
            pairs_ = samples_pairs(run.samples["ucf_crime"])
            if pairs_:
                stamp = run.samples["ucf_crime"].name.split("_samples_")[0]  # the run that logged these samples
                name = f"{run.checkpoint} fps={fps_text(run.fps)} {stamp}"
                ucf[name] = pairs_
    for index, (name, pairs_) in enumerate(ucf.items()):
        stem = out_dir / f"ucf_confusion_{index}_{slug(name)}"
        made.append((f"UCF-Crime confusion matrix: {name}", confusion_matrix(pairs_, f"UCF-Crime: {name}", stem)))
    if ucf:
        made.append(("UCF-Crime per-class accuracy", per_class_accuracy(ucf, out_dir / "ucf_per_class_accuracy")))
    fps_plot = accuracy_vs_fps(runs, out_dir / "accuracy_vs_fps")
    if fps_plot:
        made.append(("Accuracy vs frames per second", fps_plot))
    for index, pair in enumerate(pairs):
        made.append(
            (
                f"Judge agreement: {pair.title}",
                agreement_matrix(pair, out_dir / f"judge_agreement_{index}_{slug(pair.task)}"),
            )
        )
    return made
