"""How much two judges agree on the same items: the number that says whether a judge swap is safe.

The study saw MSVD-QA move ten points when GPT-3.5 was replaced by Llama-3; this module makes that
comparison routine. Items are matched by task, document/item id and the exact (question, answer,
prediction) text, so two re-judgings of the same run line up whatever folders they were written to.
Items one judge failed are reported separately (``failed_a`` / ``failed_b``), never dropped silently
and never counted as "no".
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamavid_eval.judges.rejudge import ITEMS_SUFFIX

Rows = Sequence[dict[str, Any]]


def load_items(source: str | Path) -> list[dict[str, Any]]:
    """Per-item rows from an ``*_items.jsonl`` file or a folder holding items files of ONE judge."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob(f"*_rejudge_*{ITEMS_SUFFIX}"))
        if not files:
            raise FileNotFoundError(f"no *_rejudge_*{ITEMS_SUFFIX} files under {path}; run `llamavid judge rejudge` first")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")
    rows = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    judges = sorted({str(r.get("judge")) for r in rows})
    if len(judges) > 1:
        raise ValueError(f"{path} holds judgements of several judges ({', '.join(judges)}); pass one items file "
                         f"instead: {', '.join(str(f) for f in files)}")
    return rows


def _keys(rows: Rows) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by match key; the n-th repeat of one key is keyed apart from the first."""
    seen: Counter[tuple[Any, ...]] = Counter()
    out = {}
    for r in rows:
        text = json.dumps([r.get("question"), r.get("answer"), r.get("prediction")], ensure_ascii=False)
        base = (r.get("task"), json.dumps(r.get("doc_id"), default=str), json.dumps(r.get("id"), default=str),
                hashlib.sha256(text.encode("utf-8")).hexdigest())
        out[(*base, seen[base])] = r
        seen[base] += 1
    return out


def _ok(r: dict[str, Any]) -> bool:
    return not r.get("failed") and r.get("verdict") is not None and r.get("score") is not None


def compare(a: Rows | str | Path, b: Rows | str | Path, *, examples: int = 5) -> dict[str, Any]:
    """Agreement report between judgements ``a`` and ``b`` (rows as written by rejudge, or paths)."""
    rows_a = load_items(a) if isinstance(a, (str, Path)) else list(a)
    rows_b = load_items(b) if isinstance(b, (str, Path)) else list(b)
    ka, kb = _keys(rows_a), _keys(rows_b)
    matched = [k for k in ka if k in kb]
    both = [(ka[k], kb[k]) for k in matched if _ok(ka[k]) and _ok(kb[k])]
    failed = [(ka[k], kb[k]) for k in matched if not (_ok(ka[k]) and _ok(kb[k]))]
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
    return {
        "judge_a": _name(rows_a),
        "judge_b": _name(rows_b),
        "n_a": len(rows_a),
        "n_b": len(rows_b),
        "matched": len(matched),
        "only_in_a": len(ka) - len(matched),
        "only_in_b": len(kb) - len(matched),
        "failed_a": sum(1 for x, _ in failed if not _ok(x)),
        "failed_b": sum(1 for _, y in failed if not _ok(y)),
        "failed_both": sum(1 for x, y in failed if not _ok(x) and not _ok(y)),
        "n": n,
        "accuracy_a": 100.0 * sum(va) / n if n else None,
        "accuracy_b": 100.0 * sum(vb) / n if n else None,
        "mean_score_a": sum(sa) / n if n else None,
        "mean_score_b": sum(sb) / n if n else None,
        "agreement": 100.0 * (conf["yes_yes"] + conf["no_no"]) / n if n else None,
        "kappa": cohen_kappa(conf),
        "pearson": pearson(sa, sb),
        "spearman": spearman(sa, sb),
        "confusion": conf,
        "disagreements": [_example(x, y) for x, y in disagree[:examples]],
        "failed_items": [_example(x, y) for x, y in failed[:examples]],
    }


def cohen_kappa(conf: dict[str, int]) -> float | None:
    """Cohen's kappa of a 2x2 table; ``None`` when chance agreement is 1 (both judges constant and equal)."""
    n = sum(conf.values())
    if not n:
        return None
    po = (conf["yes_yes"] + conf["no_no"]) / n
    a_yes, b_yes = conf["yes_yes"] + conf["yes_no"], conf["yes_yes"] + conf["no_yes"]
    pe = (a_yes * b_yes + (n - a_yes) * (n - b_yes)) / (n * n)
    return None if math.isclose(pe, 1.0) else (po - pe) / (1 - pe)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; ``None`` with fewer than two items or a constant side (r is undefined)."""
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    return pearson(_ranks(x), _ranks(y))


def _name(rows: Rows) -> str | None:
    names = sorted({str(r.get("judge")) for r in rows if r.get("judge")})
    return ", ".join(names) or None


def _example(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
    def side(r: dict[str, Any]) -> dict[str, Any]:
        return {"verdict": r.get("verdict"), "score": r.get("score"), "failed": bool(r.get("failed")), "error": r.get("error")}

    return {"task": x.get("task"), "id": x.get("id"), "question": x.get("question"), "answer": x.get("answer"),
            "prediction": x.get("prediction"), "a": side(x), "b": side(y)}


def to_markdown(report: dict[str, Any]) -> str:
    """The report for people: counts, metrics, the 2x2 table and a few disagreements."""

    def f(v: float | None, d: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    c = report["confusion"]
    out = [
        "# Judge agreement",
        "",
        f"- A: `{report['judge_a']}` ({report['n_a']} items), B: `{report['judge_b']}` ({report['n_b']} items)",
        f"- matched items: {report['matched']} (only in A: {report['only_in_a']}, only in B: {report['only_in_b']})",
        f"- failed among matched: A {report['failed_a']}, B {report['failed_b']} (both {report['failed_both']}); "
        f"compared: {report['n']}",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| accuracy A (%) | {f(report['accuracy_a'], 2)} |",
        f"| accuracy B (%) | {f(report['accuracy_b'], 2)} |",
        f"| mean score A | {f(report['mean_score_a'])} |",
        f"| mean score B | {f(report['mean_score_b'])} |",
        f"| agreement on yes/no (%) | {f(report['agreement'], 2)} |",
        f"| Cohen's kappa | {f(report['kappa'])} |",
        f"| Pearson r (scores) | {f(report['pearson'])} |",
        f"| Spearman rho (scores) | {f(report['spearman'])} |",
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
                out.append(f"- [{r['task']} #{r['id']}] Q: {r['question']!r} | answer: {r['answer']!r} | "
                           f"prediction: {r['prediction']!r} -> A: {_side(r['a'])}, B: {_side(r['b'])}")
    return "\n".join(out) + "\n"


def _side(s: dict[str, Any]) -> str:
    if s["failed"]:
        return f"FAILED ({s['error']})"
    return f"{'yes' if s['verdict'] else 'no'}/{s['score']}"
