"""The leaderboard's report files: the study's figures and the one self-contained HTML page that shows them.

Figures: UCF-Crime confusion matrix and per-class accuracy, accuracy vs fps, judge agreement. They are built
with ``matplotlib.figure.Figure`` (Agg canvas, no pyplot): no global backend state, safe in headless CI and
inside other programs. Every plot is written as PNG (the page) and SVG (papers).

The page: sortable leaderboard, judge comparisons and the figures. Everything is inline (CSS, JS, PNGs as
data URIs) so the file can be mailed, attached to CI runs or opened from disk with no server and no network.
``#selftest`` in the URL makes the page sort itself and record the outcome in ``<body data-selftest>``,
which the headless-Chromium test reads. ``llamavid judge swap``'s report uses the same figure and page parts.
"""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llamavid_eval.core.ucf import confusion_counts, samples_pairs
from llamavid_eval.results.agreement import (
    VERDICT_LABELS,
    JudgePair,
    flat_stats,
    interval_method,
    side_by_side,
    verdict_matrix,
)
from llamavid_eval.results.load import Run
from llamavid_eval.results.table import Leaderboard, format_cell, format_value, interval_notes, short_source_text

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


# The HTML page.

_MAX_ITEMS = 300  # side-by-side rows per judge pair; the CSV has them all

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1d1d1f;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}h3{font-size:1rem}
.meta{color:#666;font-size:.85rem}.layout{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}
.tablebox{flex:1 1 640px;min-width:0;overflow-x:auto}.plots{flex:1 1 380px;max-width:720px}
table{border-collapse:collapse;font-size:.82rem}th,td{border:1px solid #ddd;padding:.25rem .45rem;white-space:nowrap}
th{background:#f2f4f7;position:sticky;top:0;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.missing{color:#aaa;text-align:center}
tr.reported td{background:#fff8e6;font-style:italic}.badge{font-size:.72rem;padding:0 .35rem;border-radius:.6rem}
.badge.reported{background:#f5c451}.badge.measured{background:#9fd8a6}
figure{margin:0 0 1.2rem}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8rem;color:#555}
input#filter{margin:.5rem 0;padding:.3rem .5rem;width:18rem}.notes{white-space:normal;min-width:14rem;font-size:.75rem}
details{margin:.5rem 0}.agree-False td{background:#fdecea}
"""

_JS = """
(function(){
  var errors=[];window.addEventListener('error',function(e){errors.push(String(e.message));document.body.dataset.jsErrors=errors.join(' | ');});
  function key(td,num){var v=td.getAttribute('data-v');if(v===null||v===''){return null;}return num?parseFloat(v):v.toLowerCase();}
  function sortTable(table,col,dir){
    var th=table.tHead.rows[0].cells[col],num=th.dataset.type==='num',body=table.tBodies[0];
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a.cells[col],num),y=key(b.cells[col],num);
      if(x===null&&y===null){return 0;}if(x===null){return 1;}if(y===null){return -1;}
      return (x<y?-1:x>y?1:0)*(dir==='asc'?1:-1);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(c){c.classList.remove('sorted-asc','sorted-desc');});
    th.classList.add('sorted-'+dir);th.dataset.dir=dir;
  }
  function firstDir(th){return th.dataset.type==='num'&&th.dataset.hib!=='false'?'desc':'asc';}
  document.querySelectorAll('table.sortable').forEach(function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
      th.title='click to sort';
      th.addEventListener('click',function(){var d=th.dataset.dir?(th.dataset.dir==='asc'?'desc':'asc'):firstDir(th);sortTable(table,col,d);});
    });
  });
  var filter=document.getElementById('filter');
  if(filter){filter.addEventListener('input',function(){var q=filter.value.toLowerCase();
    document.querySelectorAll('#board tbody tr').forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}
  if(location.hash==='#selftest'){
    var table=document.getElementById('board'),ths=table.tHead.rows[0].cells,col=-1;
    for(var i=0;i<ths.length;i++){if(ths[i].dataset.type==='num'){col=i;break;}}
    var result='ok';
    if(col>=0){sortTable(table,col,'desc');var seen=[],ok=true,missing=false;
      Array.prototype.forEach.call(table.tBodies[0].rows,function(r){var v=key(r.cells[col],true);
        if(v===null){missing=true;}else{if(missing){ok=false;}if(seen.length&&v>seen[seen.length-1]){ok=false;}seen.push(v);}});
      if(!ok){result='fail: column '+ths[col].textContent+' not sorted';}}
    document.body.dataset.selftest=result;
  }
  document.body.dataset.ready='1';
})();
"""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _cell(value: object, numeric: bool, title: str = "", text: str | None = None) -> str:
    text = format_value(value) if text is None else text
    missing = value is None or (isinstance(value, float) and math.isnan(value)) or text == "—"
    raw = "" if missing else (repr(float(value)) if numeric and isinstance(value, (int, float)) else str(value))  # type: ignore[arg-type]
    cls = "missing" if missing and numeric else ("num" if numeric else "")
    attrs = f' class="{cls}"' if cls else ""
    attrs += f' title="{escape(title)}"' if title else ""
    return f'<td data-v="{escape(raw)}"{attrs}>{escape(text)}</td>'


def board_table(board: Leaderboard) -> str:
    """The leaderboard ``<table>``, every metric column; cells read ``value ± half-width``, the tooltip
    gives the interval, its method and the number of items."""
    frame = board.frame
    head = []
    for col in frame.columns:
        numeric = col in board.metric_columns
        hib = board.higher_is_better.get(col)
        head.append(f'<th data-type="{"num" if numeric else "text"}" data-hib="{str(hib).lower()}">{escape(col)}</th>')
    body = []
    for pos, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for col in frame.columns:
            value = row[col]
            if col == "kind":
                cells.append(
                    f'<td data-v="{escape(str(value))}"><span class="badge {escape(str(value))}">{escape(str(value))}</span></td>'
                )
            elif col in board.metric_columns:
                interval = board.intervals.get((pos, col))
                tip = (
                    interval.describe(2)
                    if interval is not None
                    else ("reported: no interval" if row["kind"] == "reported" else "")
                )
                cells.append(_cell(value, True, tip, format_cell(board, pos, col, value)))
            elif col == "source":
                text = short_source_text(str(value)) if row["kind"] == "measured" else str(value)
                cells.append(f'<td data-v="{escape(text)}" title="{escape(str(value))}">{escape(text)}</td>')
            elif col == "notes":
                cells.append(f'<td class="notes" data-v="{escape(str(value))}">{escape(str(value))}</td>')
            else:
                cells.append(_cell(value, False))
        body.append(f'<tr class="{escape(str(row["kind"]))}">' + "".join(cells) + "</tr>")
    return (
        '<table id="board" class="sortable"><thead><tr>'
        + "".join(head)
        + "</tr></thead><tbody>"
        + "\n".join(body)
        + "</tbody></table>"
    )


def _simple_table(frame: pd.DataFrame, css_class: str = "sortable", row_class: str | None = None) -> str:
    head = "".join(
        f'<th data-type="{"num" if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool else "text"}">{escape(str(c))}</th>'
        for c in frame.columns
    )
    rows = []
    for _, row in frame.iterrows():
        cls = f' class="{row_class}-{row.get("agree")}"' if row_class else ""
        cells = "".join(
            _cell(
                None if pd.isna(row[c]) else row[c], isinstance(row[c], (int, float)) and not isinstance(row[c], bool)
            )
            for c in frame.columns
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>' + "".join(rows) + "</tbody></table>"


def judge_section(pair: JudgePair, stats: dict) -> str:
    """Statistics table plus the item-by-item comparison (disagreements first)."""
    shown = flat_stats(stats)
    stats_frame = pd.DataFrame(
        {
            "statistic": list(shown),
            "value": [format_value(v) if not isinstance(v, float) else f"{v:.3f}" for v in shown.values()],
        }
    )
    items = side_by_side(pair)
    note = f"{len(pair.ids)} items compared; intervals: {escape(interval_method(stats))}"
    if pair.prediction_mismatches:
        note += f"; {pair.prediction_mismatches} items left out (different predictions)"
    more = f" (first {_MAX_ITEMS} of {len(items)})" if len(items) > _MAX_ITEMS else ""
    return (
        f"<h3>{escape(pair.title)}</h3><p class='meta'>{note}</p>"
        + _simple_table(stats_frame, css_class="stats")
        + f"<details><summary>items side by side{more}</summary>"
        + _simple_table(items.head(_MAX_ITEMS), row_class="agree")
        + "</details>"
    )


def render(
    board: Leaderboard,
    plots: list[tuple[str, list[Path]]],
    judge_sections: list[str],
    title: str = "LLaMA-VID leaderboard",
) -> str:
    """The whole page as a string."""
    figures = "".join(
        f'<figure><img alt="{escape(caption)}" src="{data_uri(paths[0])}"><figcaption>{escape(caption)} ({escape(paths[0].stem)}.png/.svg)</figcaption></figure>'
        for caption, paths in plots
    )
    judges = "<h2>Judge comparison</h2>" + "".join(judge_sections) if judge_sections else ""
    measured = int((board.frame["kind"] == "measured").sum()) if len(board.frame) else 0
    notes = '<ul class="meta">' + "".join(f"<li>{escape(n)}</li>" for n in interval_notes(board)) + "</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body><h1>{escape(title)}</h1>
<p class="meta">generated {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")} UTC · {measured} measured row(s), {len(board.frame) - measured} reported ·
<span class="badge reported">reported</span> = number from the paper or the reproduction study, <span class="badge measured">measured</span> = an lmms-eval run here ·
"—" = no value (missing or failed, never zero) · click a column header to sort, hover a number for its interval</p>
<div class="layout"><section class="tablebox"><input id="filter" type="search" placeholder="filter rows…">{board_table(board)}{notes}{judges}</section>
<aside class="plots">{figures or '<p class="meta">no plots for these runs</p>'}</aside></div>
<script>{_JS}</script></body></html>
"""
