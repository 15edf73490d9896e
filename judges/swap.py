"""The judge-swap experiment: the same stored predictions under several judges, and what changes.

The paper's judge (``gpt-3.5-turbo``) is being retired, so every user has to swap judges and needs
to know what the swap does to the numbers. :func:`run_swap` re-judges the logged predictions of one
or more runs with each judge (through :func:`llamavid_eval.judges.rejudge.rejudge`: cached, failures
counted) and :func:`analyse` computes, per task: each judge's accuracy and score with 95% intervals
(per run and pooled), pairwise agreement and Cohen's kappa with intervals, each judge's shift against
the reference judge with a paired interval, Kendall's tau between the judges' rankings of the runs,
and the items the judges disagree on most. Rendering (Markdown, HTML, plots) is
``llamavid_eval.results.swap_report``; this module only computes (layer 1: core and judges).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamavid_eval.core.outputs import iter_samples
from llamavid_eval.core.scores import HEADLINE, JudgedScores, Tally, Verdict, common_reason, judged_scores, verdict_of
from llamavid_eval.core.stats import kendall_tau
from llamavid_eval.judges.agreement import clusters_of, compare, ok
from llamavid_eval.judges.base import Judge
from llamavid_eval.judges.exam import judge_name
from llamavid_eval.judges.factory import BACKENDS, JudgeSettings, build_judge, resolve_settings
from llamavid_eval.judges.interrupt import Interrupted
from llamavid_eval.judges.preflight import check_once
from llamavid_eval.judges.rejudge import rejudge

MIN_RUNS_FOR_TAU = 3  # Kendall's tau over two runs is +1 or -1: no information beyond "same order or not"
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class JudgeSpec:
    """One ``--judges`` entry: ``backend[:model][@base_url][#prompt=FILE]`` (``exact``, ``openai:gpt-4.1-mini``,
    ``local:meta-llama/Meta-Llama-3-8B-Instruct@http://127.0.0.1:8000/v1``, ``hf:/m.gguf#prompt=/p.yaml``).
    An ``@`` inside the model name is written ``%40``: the first ``@`` must start an http(s) URL."""

    text: str
    backend: str
    model: str | None = None
    base_url: str | None = None
    prompt: str | None = None  # a judge prompt file (judges.prompt); None: the built-in prompt or --judge-prompt

    def overrides(self) -> dict[str, Any]:
        pairs = (("backend", self.backend), ("model", self.model), ("base_url", self.base_url), ("prompt", self.prompt))
        return {k: v for k, v in pairs if v}


PROMPT_MARK = "#prompt="  # "#prompt=" occurs in no model name, path or base URL we know of; "," and "@" would


def parse_spec(entry: str, option: str = "--judges") -> JudgeSpec:
    """One judge spec ``backend[:model][@base_url][#prompt=FILE]``; ValueError naming it and the known backends."""
    entry = entry.strip()
    rest, mark, prompt = entry.partition(PROMPT_MARK)
    if mark and not prompt.strip():
        raise ValueError(f"{option} entry {entry!r}: {PROMPT_MARK} needs a prompt file after it")
    head, at, url = rest.partition("@")
    if at and not url.startswith(("http://", "https://")):  # e.g. local:/models/smol@v2.gguf@http://...
        raise ValueError(
            f"{option} entry {entry!r}: ambiguous '@': it separates the model from the server URL, and the text "
            f"after the first '@' ({url!r}) is not an http(s) URL. If the model name holds '@', write it as %40 "
            "(local:/models/smol%40v2.gguf@http://host:8000/v1), or leave the URL out of the entry and give it "
            "with --base-url"
        )
    backend, _, model = head.partition(":")
    backend, model = backend.strip().lower(), model.replace("%40", "@")
    if any(c.isspace() for c in url):
        raise ValueError(f"{option} entry {entry!r}: the URL {url!r} holds a space (one judge per entry)")
    if backend == "exact" and (model or url or prompt.strip()):
        raise ValueError(f"{option} entry {entry!r}: exact match takes no model, URL or prompt; write exact")
    if backend not in BACKENDS:
        raise ValueError(
            f"{option} entry {entry!r}: unknown backend {backend!r}; use one of {', '.join(BACKENDS)} "
            "as backend[:model][@base_url][#prompt=FILE], e.g. openai:gpt-4.1-mini,exact"
        )
    return JudgeSpec(entry, backend, model or None, url or None, prompt.strip() or None)


def parse_judges(text: str) -> list[JudgeSpec]:
    """The ``--judges`` list; ValueError naming the bad entry and the known backends."""
    specs = [parse_spec(entry) for entry in text.split(",") if entry.strip()]
    if len(specs) < 2:
        raise ValueError(f"--judges needs at least two judges to compare, got {len(specs)} ({text!r})")
    return specs


def judge_settings(specs: Sequence[JudgeSpec], common: dict[str, Any] | None = None) -> list[JudgeSettings]:
    """Each spec's settings (the command's shared options under it); ValueError when two name one judge,
    found before any judge is asked (the name a judge reports is checked again after it ran)."""
    settings = [resolve_settings(overrides={**(common or {}), **spec.overrides()}) for spec in specs]
    seen: dict[str, str] = {}
    for spec, one in zip(specs, settings, strict=True):
        name = judge_name(one)
        if name in seen:
            raise ValueError(f"--judges names {name} twice ({seen[name]} and {spec.text}); each judge once")
        seen[name] = spec.text
    return settings


def reference_index(specs: Sequence[JudgeSpec], settings: Sequence[JudgeSettings], reference: str | None) -> int:
    """Which judge ``--reference`` names: its ``--judges`` entry as written, or its name (``openai:gpt-4.1-mini``,
    ``exact-match``; a judge without a prompt file before one with it); ValueError before anything is judged."""
    if reference is None:
        return 0
    names = [judge_name(one) for one in settings]
    for matches in (
        [i for i, spec in enumerate(specs) if spec.text == reference],
        [i for i, name in enumerate(names) if name == reference],  # a prompt-file variant's name has a #prompt=
    ):
        if matches:
            return matches[0]
    raise ValueError(
        f"--reference {reference!r} is not among the judges; name one as --judges writes it "
        f"({', '.join(spec.text for spec in specs)}) or by its name ({', '.join(names)})"
    )


def run_swap(
    sources: Sequence[str | Path],
    specs: Sequence[JudgeSpec],
    out: Path,
    *,
    tasks: Sequence[str] | None = None,
    common: dict[str, Any] | None = None,
    build: Callable[[JudgeSettings], Judge] = build_judge,
    check: Callable[[JudgeSettings], object] = check_once,
) -> dict[str, Rows]:
    """Re-judge every source with every judge; judge name -> per-item rows (each with ``run``).

    Re-judge files go under ``out/rejudge/<judge>/<source number>/`` (the inputs stay untouched)."""
    rows: dict[str, Rows] = {}
    all_settings = judge_settings(specs, common)
    for settings in all_settings:
        check(settings)  # every judge checked before any is asked: a dead one stops the swap in seconds
    for spec, settings in zip(specs, all_settings, strict=True):
        judge = build(settings)
        try:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", judge.name).strip("-")
            found: Rows = []
            for index, source in enumerate(sources):
                overview = rejudge(
                    source, judge, out=out / "rejudge" / slug / str(index), tasks=tasks, settings=settings.public()
                )
                for run in overview["runs"]:
                    label = _run_label(source, run["rejudge"], len(sources))
                    found += [{**row, "run": label} for row in iter_samples(Path(run["items"]))]
        except Interrupted as stopped:  # the judges after this one never started: the last line says so
            stopped.not_started = [later.text for later in specs[list(specs).index(spec) + 1 :]]
            raise
        finally:
            judge.close()
        if judge.name in rows:
            raise ValueError(f"--judges names {judge.name} twice ({spec.text}); each judge once")
        rows[judge.name] = found
    return rows


def _run_label(source: str | Path, info: dict[str, Any], n_sources: int) -> str:
    parts = [p for p in (info.get("model_dir"), info.get("date_id")) if p]
    name = "/".join(parts) or Path(source).name
    return name if n_sources == 1 else f"{Path(source).name}:{name}"


def _verdicts(rows: Rows) -> list[Verdict]:
    clusters = clusters_of(rows) or [None] * len(rows)
    return [verdict_of(r, c) for r, c in zip(rows, clusters, strict=True)]


#: A verdict whose P(yes) lies within this distance of 0.5 was close to a coin flip for the judge.
NEAR_COIN = 0.1


def confidence(rows: Rows) -> dict[str, Any] | None:
    """How sure the judge was of its verdicts, from the P(yes) a constrained judge records per item (None where
    none is recorded: servers and exact match): the mean P(yes), the mean probability of the verdict given, and
    the share of verdicts within :data:`NEAR_COIN` of a coin flip. A judge at 51/49 and one at 99/1 may give the
    same verdicts; they are not the same judge."""
    probs = [float(p) for r in rows if isinstance(p := (r.get("metadata") or {}).get("p_yes"), (int, float))]
    if not probs:
        return None
    return {
        "n": len(probs),
        "mean_p_yes": sum(probs) / len(probs),
        "mean_p_verdict": sum(max(p, 1 - p) for p in probs) / len(probs),
        "near_coin_share": sum(abs(p - 0.5) < NEAR_COIN for p in probs) / len(probs),
        "near_coin": NEAR_COIN,
    }


def _accuracy(result: JudgedScores, withheld: str | None) -> dict[str, Any]:
    """n, failures, accuracy and mean score with 95% intervals, VALID (failures left out) and ALL (``_all``:
    failures as wrong), from :func:`llamavid_eval.core.scores.judged_scores`; ``withheld`` (the judge's failures
    on the task exceed the budget): no numbers, and the reason."""
    shown = {m: result.intervals[m].to_dict() if result.intervals[m].n and not withheld else None for m in HEADLINE}
    return {"n": result.n, "failures": result.failures, **shown, "withheld": withheld}


def analyse(
    rows: dict[str, Rows], reference: str | None = None, *, examples: int = 10, max_failure_rate: float | None = None
) -> dict[str, Any]:
    """The swap report (JSON-ready) from judge -> rows; ``reference`` defaults to the first judge. A judge whose
    failures on a task exceed ``max_failure_rate`` (default ``$LLAMAVID_JUDGE_MAX_FAILURE_RATE``) gets no numbers
    there and ranks no run."""
    rate = resolve_settings().max_failure_rate if max_failure_rate is None else max_failure_rate
    judges = list(rows)
    reference = reference or judges[0]
    if reference not in rows:
        raise ValueError(f"--reference {reference!r} is not among the judges ({', '.join(judges)})")
    tasks = sorted({r["task"] for rs in rows.values() for r in rs})
    runs = sorted({r["run"] for rs in rows.values() for r in rs})
    by = defaultdict(list)
    for judge, rs in rows.items():
        for r in rs:
            by[(judge, r["task"])].append(r)
    per_judge = []
    for task, judge in itertools.product(tasks, judges):
        task_rows = by[(judge, task)]
        pooled = judged_scores(_verdicts(task_rows), rate)
        why = pooled.budget_error(f"{task}, judge {judge}")
        per_judge.append(
            {
                "task": task,
                "judge": judge,
                "run": "all runs",
                **_accuracy(pooled, why),
                "confidence": confidence(task_rows),
            }
        )
        if len(runs) > 1:
            for run in runs:
                run_rows = [r for r in task_rows if r["run"] == run]
                if run_rows:
                    per_judge.append(
                        {
                            "task": task,
                            "judge": judge,
                            "run": run,
                            **_accuracy(judged_scores(_verdicts(run_rows), rate), why),
                        }
                    )
    pairs, shifts = [], []
    for task in tasks:
        for a, b in itertools.combinations(judges, 2):
            pairs.append(_pair(task, a, b, compare(_keyed(by[(a, task)]), _keyed(by[(b, task)]), examples=0)))
        for judge in judges:
            if judge != reference:
                report = compare(_keyed(by[(reference, task)]), _keyed(by[(judge, task)]), examples=0)
                shifts.append(
                    {
                        "task": task,
                        "judge": judge,
                        "reference": reference,
                        "n": report["n"],
                        "accuracy_shift": report["intervals"].get("accuracy_shift"),
                        "score_shift": report["intervals"].get("score_shift"),
                        "mcnemar_p": report["mcnemar_p"],
                    }
                )
    total = {j: (sum(not ok(r) for r in rs), len(rs)) for j, rs in rows.items()}
    return {
        "judges": judges,
        "reference": reference,
        "tasks": tasks,
        "runs": runs,
        "per_judge": per_judge,
        "pairs": pairs,
        "shifts": shifts,
        "rankings": [_ranking(task, judges, per_judge, runs) for task in tasks],
        "disagreements": most_disputed(rows, examples),
        "failures": {j: {"failed": f, "total": n} for j, (f, n) in total.items()},
    }


def _keyed(rows: Rows) -> Rows:
    """Rows whose ``task`` also names the run, so that items of different runs never pair up."""
    return [{**r, "task": f"{r['task']}\x00{r['run']}"} for r in rows]


def _pair(task: str, a: str, b: str, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": task,
        "a": a,
        "b": b,
        "n": report["n"],
        "matched": report["matched"],
        "agreement": report["agreement"],
        "kappa": report["kappa"],
        "mcnemar_p": report["mcnemar_p"],
        "agreement_ci": report["intervals"].get("agreement"),
        "kappa_ci": report["intervals"].get("kappa"),
        "confusion": report["confusion"],
    }


def _ranking(task: str, judges: list[str], per_judge: list[dict[str, Any]], runs: list[str]) -> dict[str, Any]:
    """The runs ordered by each judge's accuracy, and Kendall's tau between judges (n/a under 3 runs)."""
    acc = {
        (p["judge"], p["run"]): (p["accuracy"] or {}).get("estimate", float("nan"))
        for p in per_judge
        if p["task"] == task
    }
    # a run is ranked only where every judge has its accuracy: a judge that failed all of a run's
    # items has no number for it (nan would sort arbitrarily and Kendall's tau would drop it silently)
    ranked = [r for r in runs if all(math.isfinite(acc.get((j, r), math.nan)) for j in judges)]
    unranked = [r for r in runs if r not in ranked and any((j, r) in acc for j in judges)]
    present = ranked if len(runs) > 1 else []
    order = {j: sorted(present, key=lambda r, j=j: -acc.get((j, r), float("-inf"))) for j in judges}
    taus = []
    for a, b in itertools.combinations(judges, 2):
        if len(present) < MIN_RUNS_FOR_TAU:
            taus.append(
                {
                    "a": a,
                    "b": b,
                    "tau": None,
                    "p": None,
                    "note": f"n/a: {len(present)} run(s) of this task, Kendall's tau needs at least {MIN_RUNS_FOR_TAU}",
                }
            )
            continue
        tau, p = kendall_tau(
            [acc.get((a, r), float("nan")) for r in present], [acc.get((b, r), float("nan")) for r in present]
        )
        taus.append({"a": a, "b": b, "tau": tau, "p": p, "note": ""})
    same = len({tuple(o) for o in order.values()}) <= 1
    scores = {j: {r: acc.get((j, r)) for r in present} for j in judges}
    return {
        "task": task,
        "runs": present,
        "order": order,
        "accuracy": scores,
        "same_order": same if present else None,
        "tau": taus,
        "unranked": unranked,
    }


def most_disputed(rows: dict[str, Rows], limit: int) -> list[dict[str, Any]]:
    """Items the judges split on most (closest to half yes / half no, then widest score range)."""
    items: dict[tuple[Any, ...], dict[str, Any]] = {}
    for judge, rs in rows.items():
        for r in rs:
            key = (r["run"], r["task"], str(r.get("doc_id")), str(r.get("id")), r["question"], r["prediction"])
            item = items.setdefault(
                key,
                {
                    "run": r["run"],
                    "task": r["task"],
                    "id": r.get("id"),
                    "question": r["question"],
                    "answer": r["answer"],
                    "prediction": r["prediction"],
                    "judges": {},
                },
            )
            item["judges"][judge] = {"verdict": r.get("verdict"), "score": r.get("score"), "failed": not ok(r)}
    ranked = []
    for item in items.values():
        good = [v for v in item["judges"].values() if not v["failed"]]
        yes = sum(bool(v["verdict"]) for v in good)
        split = min(yes, len(good) - yes)
        if split == 0:
            continue
        spread = max(float(v["score"]) for v in good) - min(float(v["score"]) for v in good)
        ranked.append((-(split / len(good)), -spread, item["task"], str(item["id"]), item))
    ranked.sort(key=lambda t: t[:4])
    return [t[-1] for t in ranked[:limit]]


def failure_tallies(rows: dict[str, Rows]) -> list[Tally]:
    """Failures per judge and task, each with its most common reason: what the exit status is decided on
    (a judge failing every item must not hide behind another judge's successes)."""
    groups: dict[tuple[str, str], Rows] = defaultdict(list)
    for judge, rs in rows.items():
        for r in rs:
            groups[(judge, r["task"])].append(r)
    return [
        Tally(
            f"judge {judge} on {task}",
            sum(not ok(r) for r in rs),
            len(rs),
            common_reason(r.get("error") for r in rs if not ok(r)),
        )
        for (judge, task), rs in groups.items()
    ]
