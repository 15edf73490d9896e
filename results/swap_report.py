"""The judge-swap report for people: Markdown, one self-contained HTML page, plots, and the JSON beside them.

The numbers come from :func:`llamavid_eval.judges.swap.analyse`; this module only lays them out.
Plots: a Cohen's-kappa matrix of every judge pair per task, and each judge's accuracy with its 95%
interval as error bars (one group per task).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from llamavid_eval.core.outputs import json_safe
from llamavid_eval.core.stats import Interval
from llamavid_eval.results.report import data_uri, new_figure, save, slug


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci(iv: dict[str, Any] | None, digits: int = 1) -> str:
    """``66.7 ± 4.1 (62.6-70.8, n=300)`` from an Interval dict."""
    if not iv:
        return "n/a"
    low, high = iv["low"], iv["high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{iv['estimate']:.{digits}f} (no interval, n={iv['n']})"
    interval = Interval.from_dict(iv)
    head = f"{iv['estimate']:.{digits}f}" if interval.lopsided else interval.short(digits)
    return f"{head} ({low:.{digits}f} to {high:.{digits}f}, n={iv['n']})"


def _table(header: str, align: str, rows: list[str]) -> list[str]:
    """A Markdown table: ``header`` and ``rows`` as ``a | b`` cells, ``align`` as ``---|---:``."""
    return [f"| {header} |", f"|{align}|", *(f"| {row} |" for row in rows)]


def _judge_table(report: dict[str, Any]) -> list[str]:
    return _table(
        "task | run | judge | items | failures | accuracy (%) VALID | accuracy (%) ALL | mean score VALID | mean score ALL",
        "---|---|---|---:|---:|---:|---:|---:|---:",
        [
            f"{p['task']} | {p['run']} | {p['judge']} | {p['n']} | {p['failures']} | "
            + (
                "judge failed: not a score | | |"
                if p.get("withheld")
                else f"{_ci(p['accuracy'])} | {_ci(p.get('accuracy_all'))} | {_ci(p['mean_score'], 2)} | "
                f"{_ci(p.get('mean_score_all'), 2)}"
            )
            for p in report["per_judge"]
        ],
    )


def _confidence_table(report: dict[str, Any]) -> list[str]:
    """Each judge's certainty (all runs pooled), where it recorded P(yes) per verdict (the in-process judge)."""
    rows = []
    for p in report["per_judge"]:
        if p["run"] != "all runs":
            continue
        c = p.get("confidence")
        if c is None:
            rows.append(f"{p['task']} | {p['judge']} | 0 | not recorded (only the in-process judge records P(yes)) | |")
            continue
        rows.append(
            f"{p['task']} | {p['judge']} | {c['n']} | {c['mean_p_yes']:.3f} | {c['mean_p_verdict']:.3f} | "
            f"{100 * c['near_coin_share']:.1f}"
        )
    bound = next((p["confidence"]["near_coin"] for p in report["per_judge"] if p.get("confidence")), None)
    note = (
        f"Near a coin flip: P(yes) within {bound} of 0.5. Two judges may give the same verdicts with very different "
        "certainty; only a judge that scores its candidate verdicts (the in-process `hf` judge) records it."
    )
    header = "task | judge | verdicts with P(yes) | mean P(yes) | mean P(verdict given) | near a coin flip (%)"
    return [*_table(header, "---|---|---:|---:|---:|---:", rows), *([""] + [note] if bound is not None else [])]


def _pair_table(report: dict[str, Any]) -> list[str]:
    return _table(
        "task | judge A | judge B | items | agreement (%) | Cohen's kappa | McNemar p",
        "---|---|---|---:|---:|---:|---:",
        [
            f"{p['task']} | {p['a']} | {p['b']} | {p['n']} | {_ci(p['agreement_ci'])} | "
            f"{_ci(p['kappa_ci'], 2)} | {_num(p['mcnemar_p'], 4)}"
            for p in report["pairs"]
        ],
    )


def _shift_table(report: dict[str, Any]) -> list[str]:
    return [
        f"Reference judge: `{report['reference']}`; shift = judge - reference on the same items (paired).",
        "",
        *_table(
            "task | judge | items | accuracy shift (points) | score shift | McNemar p",
            "---|---|---:|---:|---:|---:",
            [
                f"{s['task']} | {s['judge']} | {s['n']} | {_ci(s['accuracy_shift'])} | "
                f"{_ci(s['score_shift'], 2)} | {_num(s['mcnemar_p'], 4)}"
                for s in report["shifts"]
            ],
        ),
    ]


def _exam_table(report: dict[str, Any]) -> list[str]:
    """Each judge's exam (``llamavid judge exam``): both sides with 95% intervals, failures, fit or why not."""
    exams = report.get("exams") or {}
    rows = []
    for judge in report["judges"]:
        e = exams.get(judge)
        if e is None or not e.get("examined"):
            note = e["note"] if e else "not examined"
            rows.append(f"{judge} | - | - | - | - | {note}")
            continue
        sides = [_ci({**s["accuracy"], **_percent(s["accuracy"])}) for s in (e["sides"]["yes"], e["sides"]["no"])]
        verdict = e["verdict"] + (" (used anyway: --allow-unfit)" if e.get("allowed_unfit") else "")
        failures = f"{e['failures']['failed']} of {e['failures']['items']}"
        rows.append(f"{judge} | {e['exam']} | {sides[0]} | {sides[1]} | {failures} | {verdict}")
    table = _table(
        "judge | exam | must be yes: right (%) | must be no: right (%) | failures | verdict",
        "---|---|---:|---:|---:|---",
        rows,
    )
    examined = [e for e in exams.values() if e.get("examined")]
    if not examined:
        return table
    t = examined[0]["thresholds"]
    return [
        *table,
        "",
        f"Exam intervals: 95% Wilson score interval (independent items); fit: both sides' 95% lower bound >= "
        f"{100 * t['min_lower']:g}% and failures <= {100 * t['max_failures']:g}%.",
    ]


def _percent(iv: dict[str, Any]) -> dict[str, float]:
    return {k: 100 * iv[k] for k in ("estimate", "low", "high")}


def _ranking_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for r in report["rankings"]:
        if not r["runs"]:
            lines.append(f"- {r['task']}: one run - no ranking to compare (Kendall's tau n/a)")
            continue
        orders = "; ".join(f"{j}: {_order_text(o, r['accuracy'][j])}" for j, o in r["order"].items())
        lines.append(f"- {r['task']}: {'same order' if r['same_order'] else 'ORDER CHANGES'} ({orders})")
        for t in r["tau"]:
            lines.append(f"  - {t['a']} vs {t['b']}: {_tau_text(t, r['accuracy'])}")
        if r.get("unranked"):
            lines.append(f"  - not ranked (a judge has no accuracy for them: all failed): {', '.join(r['unranked'])}")
    return lines


def _tau_text(tau: dict[str, Any], accuracy: dict[str, dict[str, float | None]]) -> str:
    """Kendall's tau in words where it is undefined: a judge that gives every run the same accuracy
    ranks nothing, and scipy's ``nan`` would say so to nobody."""
    if tau["tau"] is None:
        return tau["note"]
    if math.isfinite(tau["tau"]):
        return f"tau = {tau['tau']:.2f} (p = {tau['p']:.3g})"
    flat = [j for j in (tau["a"], tau["b"]) if len(set(accuracy.get(j, {}).values())) <= 1]
    who = " and ".join(flat) if flat else "a judge"
    return f"undefined: {who} gives every run the same accuracy, so there is no ranking to correlate"


def _order_text(order: list[str], accuracy: dict[str, float | None]) -> str:
    """``a (70.0) > b (65.0) = c (65.0)``: ties shown as ties."""
    text = ""
    for index, run in enumerate(order):
        if index:
            text += " = " if accuracy.get(run) == accuracy.get(order[index - 1]) else " > "
        text += f"{run} ({_num(accuracy.get(run), 1)})"
    return text


def _disputed_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for item in report["disagreements"]:
        verdicts = ", ".join(
            f"{j}: {'FAILED' if v['failed'] else ('yes' if v['verdict'] else 'no') + '/' + str(v['score'])}"
            for j, v in item["judges"].items()
        )
        lines.append(
            f"- [{item['task']} {item['run']} #{item['id']}] Q: {item['question']!r} | answer: "
            f"{item['answer']!r} | prediction: {item['prediction']!r} -> {verdicts}"
        )
    return lines or ["- none: every item got the same verdict from every judge that answered"]


def to_markdown(report: dict[str, Any]) -> str:
    method = next((p["accuracy"]["method"] for p in report["per_judge"] if p["accuracy"]), "no items")
    failed = ", ".join(f"{j}: {f['failed']} of {f['total']}" for j, f in report["failures"].items())
    out = [
        "# Judge swap",
        "",
        f"- judges: {', '.join(f'`{j}`' for j in report['judges'])}",
        f"- runs: {', '.join(report['runs'])}",
        f"- judge failures: {failed} (VALID leaves them out; ALL counts them as wrong; above "
        "LLAMAVID_JUDGE_MAX_FAILURE_RATE a judge's numbers for a run are withheld and the run is not ranked)",
        f"- intervals: 95%, {method}",
        "",
        "## Judge exam (is each judge fit to judge?)",
        "",
        *_exam_table(report),
        "",
        "## Accuracy and score per judge",
        "",
        *_judge_table(report),
        "",
        "## How sure each judge was (P(yes) per verdict)",
        "",
        *_confidence_table(report),
        "",
        "## Agreement between judges",
        "",
        *_pair_table(report),
        "",
        "## Shift against the reference judge",
        "",
        *_shift_table(report),
        "",
        "## Ranking of the runs",
        "",
        *_ranking_lines(report),
        "",
        f"## Items the judges disagree on most (first {len(report['disagreements'])})",
        "",
        *_disputed_lines(report),
    ]
    return "\n".join(out) + "\n"


def kappa_matrix(report: dict[str, Any], task: str, stem: Path) -> list[Path]:
    """Judges x judges Cohen's kappa for one task (diagonal 1)."""
    judges = report["judges"]
    matrix = np.eye(len(judges))
    for p in report["pairs"]:
        if p["task"] == task:
            i, j = judges.index(p["a"]), judges.index(p["b"])
            matrix[i, j] = matrix[j, i] = np.nan if p["kappa"] is None else p["kappa"]
    fig = new_figure(1.6 + 1.3 * len(judges), 1.2 + 1.1 * len(judges))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="RdYlGn", vmin=-1, vmax=1)
    ax.set_xticks(range(len(judges)), judges, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(judges)), judges, fontsize=7)
    ax.set_title(f"Cohen's kappa, {task}", fontsize=9)
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return save(fig, stem)


def accuracy_bars(report: dict[str, Any], stem: Path) -> list[Path]:
    """Pooled accuracy per judge and task, error bars = 95% interval."""
    pooled = [p for p in report["per_judge"] if p["run"] == "all runs"]
    tasks, judges = report["tasks"], report["judges"]
    fig = new_figure(max(5.0, 1.2 + 1.4 * len(tasks) * len(judges) ** 0.5), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(judges)
    for index, judge in enumerate(judges):
        found = {p["task"]: p["accuracy"] for p in pooled if p["judge"] == judge}
        values = [found[t]["estimate"] if found.get(t) else np.nan for t in tasks]
        low = [
            v - found[t]["low"] if found.get(t) and math.isfinite(found[t]["low"]) else 0
            for t, v in zip(tasks, values, strict=True)
        ]
        high = [
            found[t]["high"] - v if found.get(t) and math.isfinite(found[t]["high"]) else 0
            for t, v in zip(tasks, values, strict=True)
        ]
        xs = np.arange(len(tasks)) + (index - (len(judges) - 1) / 2) * width
        ax.bar(xs, values, width=width, yerr=[low, high], capsize=3, label=judge)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_title("Accuracy per judge (runs pooled)", fontsize=9)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, stem)


def write(report: dict[str, Any], out: Path, *, plots: bool = True) -> list[Path]:
    """``swap_report.{md,html,json}`` and the plots under ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, list[Path]]] = []
    if plots:
        figures.append(("Accuracy per judge (95% CI)", accuracy_bars(report, out / "plots" / "swap_accuracy")))
        for task in report["tasks"]:
            figures.append(
                (f"Agreement matrix, {task}", kappa_matrix(report, task, out / "plots" / f"swap_kappa_{slug(task)}"))
            )
    markdown = to_markdown(report)
    paths = [out / "swap_report.md", out / "swap_report.json", out / "swap_report.html"]
    paths[0].write_text(markdown, encoding="utf-8")
    data = json.dumps(json_safe(report), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    paths[1].write_text(data + "\n", encoding="utf-8")
    paths[2].write_text(_html_page(markdown, figures), encoding="utf-8")
    return paths + [p for _, ps in figures for p in ps]


def _html_page(markdown: str, figures: list[tuple[str, list[Path]]]) -> str:
    """The Markdown's tables as HTML tables (a tiny converter: our own Markdown only), then the plots inline."""
    body, table = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            body.append(_html_table(table))
            table = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    imgs = "".join(
        f'<figure><img alt="{html.escape(c)}" src="{data_uri(p[0])}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for c, p in figures
    )
    style = (
        "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem}table{border-collapse:collapse;font-size:.85rem}"
        "td,th{border:1px solid #ddd;padding:.2rem .45rem}th{background:#f2f4f7}figure img{max-width:720px}"
    )
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Judge swap</title><style>{style}"
        f"</style></head><body>{''.join(body)}{imgs}</body></html>\n"
    )


def _html_table(lines: list[str]) -> str:
    rows = [
        [html.escape(c.strip()) for c in line.strip("|").split("|")] for line in lines if not line.startswith("|---")
    ]
    head = "".join(f"<th>{c}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
