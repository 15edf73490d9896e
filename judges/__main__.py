"""Command line of the judges package.

Subcommands:

``llamavid judge rejudge SOURCE [--judge {openai,local,hf,exact}] [--judge-model M] [--base-url URL] [--out DIR]``
    Re-score an lmms-eval output folder (run with ``--log_samples``) or one ``*_samples_<task>.jsonl``
    with another judge, without re-running the video model. Writes, per run,
    ``<date>_<time>_rejudge_<judge>_summary.json`` (accuracy, mean_score, failures, n, judge per
    task) and ``..._items.jsonl`` (one judgement per item) beside the input, or under ``--out``.
    Unset options come from ``LLAMAVID_JUDGE*`` environment variables, then the defaults.

``llamavid judge agree A B [--json] [--examples N]``
    Compare two judges on the same items (items files written by ``rejudge``, folders holding them,
    or lmms-eval samples files of a judged task): matched items, accuracy of each, % agreement,
    Cohen's kappa and B's shift from A with 95% intervals, exact McNemar, Pearson/Spearman of scores,
    2x2 table, a few disagreements; items failed by either judge are listed separately. Markdown to
    stdout, or JSON with ``--json``. The suite's one judge-comparison command (with ``swap``).

``llamavid judge swap RUN [RUN ...] --judges J1,J2[,...] [--reference J] [--out DIR]``
    The judge-swap experiment: re-judge the stored predictions of each run with each judge
    (``backend[:model][@base_url]``, e.g. ``openai:gpt-4.1-mini,local:meta-llama/Meta-Llama-3-8B-Instruct,exact``;
    cached), then one report (``swap_report.md/.html/.json`` and plots under ``--out``): accuracy
    and score per judge and task with intervals, pairwise kappa and agreement, each judge's shift
    against the reference judge (default: the first), Kendall's tau of the runs' ranking, and the
    items the judges disagree on most. A spec may end in ``#prompt=FILE`` (a judge prompt file), so one
    model under two prompts is one swap.

``llamavid judge exam --judge SPEC [--json] [--min-lower-bound 0.85] [--max-failures 0.02] [--exam FILE]``
    Is this judge fit? It judges the built-in exam (``judges/exam_v1.yaml``: 168 clear-cut items, half
    must be yes, half no) and reports each side's accuracy with a 95% Wilson interval, the failure
    rate and the kinds it gets wrong; the last line is ``fit`` or ``unfit: <side, kinds>`` (exit 0 / 1).
    ``rejudge``, ``swap`` and judged lmms-eval tasks run it first and stop for an unfit judge
    (``--allow-unfit``; ``LLAMAVID_JUDGE_EXAM=0`` for lmms-eval); ``exact`` is a floor, not examined.

``rejudge``, ``agree`` and ``swap`` exit non-zero when they fail or when more judgements failed than ``--max-failure-rate``
(default 0) allows - for any one judge on any one task - with the count and the reason in the last lines.
Each verdict is cached as it arrives: Ctrl-C or SIGTERM stops ``rejudge`` and ``swap`` at once, keeps
every verdict received, says how many items are left, and exits 130 / 143; the same command then asks
only those. The preflight's outcome (the format the server honours, the model it answers as) and a
progress bar (a line every 30 s when stderr is not a terminal) go to stderr.

Environment: LLAMAVID_JUDGE (openai|local|hf|exact), LLAMAVID_JUDGE_MODEL, LLAMAVID_JUDGE_BASE_URL,
LLAMAVID_JUDGE_CONCURRENCY, LLAMAVID_JUDGE_TIMEOUT, LLAMAVID_JUDGE_MAX_RETRIES,
LLAMAVID_JUDGE_PARSE_RETRIES, LLAMAVID_JUDGE_RESPONSE_FORMAT, LLAMAVID_JUDGE_BATCH_SIZE,
LLAMAVID_JUDGE_CACHE (folder, or "off"), LLAMAVID_JUDGE_API_KEY (local servers), OPENAI_API_KEY,
LLAMAVID_JUDGE_PREFLIGHT (0: no check of the judge when lmms-eval builds a judged task),
LLAMAVID_JUDGE_PROMPT (a judge prompt file or shipped name; --judge-prompt), LLAMAVID_JUDGE_EXAM (0: the judge is
not examined, and its records say so), LLAMAVID_JUDGE_MAX_FAILURE_RATE (default 0.05: above this share of failed judgements a
task's judged metrics are withheld - NaN in lmms-eval's results, "judge failed" in tables; swap ranks no run on them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from llamavid_eval.core import scores as failures
from llamavid_eval.judges import exam_cli, flow
from llamavid_eval.judges.exam import JudgeUnfit, examine
from llamavid_eval.judges.factory import BACKENDS, JudgeSettings, build_judge, resolve_settings
from llamavid_eval.judges.interrupt import Interrupted, stop_on_signals
from llamavid_eval.judges.preflight import JudgeUnavailable, check_once


def _transport_options(parser: argparse.ArgumentParser) -> None:
    """Options of every judging command (unset: ``LLAMAVID_JUDGE*``, then the defaults); read by :func:`_transport`."""
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--timeout", type=float, help="seconds per request")
    parser.add_argument("--max-retries", type=int, help="retries per request on timeouts, 429, 5xx, connection errors")
    parser.add_argument("--parse-retries", type=int, help="re-asks after an unparseable reply")
    parser.add_argument("--cache", help='cache folder, or "off"')
    parser.add_argument(
        "--judge-prompt",
        help="judge prompt file (YAML/JSON) or a shipped prompt (instructions-first); default: the built-in prompt",
    )


def _judge_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by rejudge and swap: the tasks, the transport, the exam gate, the failure budget."""
    parser.add_argument("--tasks", help="comma-separated task names to re-judge (default: all)")
    _transport_options(parser)
    parser.add_argument("--allow-unfit", action="store_true", help="go on with a judge that fails the judge exam")
    failures.add_argument(parser)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llamavid judge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rejudge", help="re-score logged lmms-eval samples with another judge")
    r.add_argument("source", help="lmms-eval output folder (--log_samples) or one *_samples_<task>.jsonl")
    r.add_argument("--judge", choices=BACKENDS, help="backend (default: $LLAMAVID_JUDGE or openai)")
    r.add_argument("--judge-model", help="judge model name or, for hf, a local model folder")
    r.add_argument("--base-url", help="OpenAI-compatible endpoint (local backend)")
    r.add_argument(
        "--out",
        type=folder,
        help="write results here (mirroring the input folders) instead of beside the input",
    )
    _judge_options(r)
    a = sub.add_parser("agree", help="agreement between two judges on the same items")
    a.add_argument(
        "a", help="items .jsonl written by rejudge, a folder with them, or samples of a judged task (judge A)"
    )
    a.add_argument("b", help="the same for judge B")
    a.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    a.add_argument("--examples", type=count, default=5, help="disagreements / failures to show (default 5)")
    failures.add_argument(a)
    w = sub.add_parser("swap", help="re-judge runs with several judges and report what the swap changes")
    w.add_argument("runs", nargs="+", help="lmms-eval output folders (--log_samples) or *_samples_<task>.jsonl files")
    w.add_argument(
        "--judges",
        required=True,
        help="comma-separated backend[:model][@base_url] (an @ in a model name: %%40), at least two",
    )
    w.add_argument(
        "--reference",
        help="judge the others are compared against: its --judges entry or its name, e.g. exact-match "
        "(default: the first)",
    )
    w.add_argument("--out", type=folder, default=Path("judge_swap"), help="report folder (default: ./judge_swap)")
    w.add_argument("--base-url", help="endpoint for local judges that name none with @")
    w.add_argument("--examples", type=count, default=10, help="most disputed items to list (default 10)")
    w.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    _judge_options(w)
    _transport_options(exam_cli.add_parser(sub))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    flow.progress_log.setLevel(logging.INFO)  # "n of N judged" lines where no bar shows
    commands = {"rejudge": _rejudge, "agree": _agree, "swap": _swap, "exam": lambda a: exam_cli.run(a, _transport(a))}
    try:
        with stop_on_signals():
            return commands[args.command](args)
    except Interrupted as stopped:  # every verdict received is in the cache; say what a rerun will ask
        print(stopped.last_line(), file=sys.stderr)
        return stopped.exit_code
    except (ValueError, OSError) as err:  # OSError: a file that cannot be read or written, named in the message
        print(f"error: {err}", file=sys.stderr)
        return 2
    except JudgeUnfit as err:
        print(f"{err}\nerror: unfit judge (above); nothing was judged", file=sys.stderr)
        return 1
    except JudgeUnavailable as err:  # the preflight's message spans lines; the verdict comes last
        print(f"{err}\nerror: a judge failed its preflight check (above); nothing was judged", file=sys.stderr)
        return 2


def count(text: str) -> int:
    """A number of things to show: a whole number, 0 or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number, 0 or more")
    return int(text)


def folder(text: str) -> Path:
    """An output folder option: refused before any judging when a file stands there (it is created if missing)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; name a folder (it is created when missing)")
    return path


def _transport(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "concurrency": args.concurrency,
        "timeout": args.timeout,
        "max_retries": args.max_retries,
        "parse_retries": args.parse_retries,
        "cache": args.cache,
        "base_url": args.base_url,
        "prompt": args.judge_prompt,
    }


def _tasks(args: argparse.Namespace) -> list[str] | None:
    return [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None


def _status(tallies: list[failures.Tally], max_rate: float) -> int:
    """0, or 1 with one line per judge/task over the budget (count and reason) last on stderr."""
    lines = failures.budget_errors(tallies, max_rate)
    for line in lines:
        print(line, file=sys.stderr)
    return 1 if lines else 0


def _checked(settings: JudgeSettings) -> None:
    """The preflight (a judge that cannot work stops here, before any item is sent), its outcome printed."""
    report = check_once(settings)
    if report is not None:
        print(report.summary(), file=sys.stderr)


def _rejudge(args: argparse.Namespace) -> int:
    from llamavid_eval.judges.rejudge import format_overview, rejudge

    overrides = {"backend": args.judge, "model": args.judge_model, **_transport(args)}
    settings = resolve_settings(overrides=overrides)
    _checked(settings)
    exam = examine(settings, allow_unfit=args.allow_unfit)  # and an unfit one here
    judge = build_judge(settings)
    try:
        public = {**settings.public(), "exam": exam}
        overview = rejudge(args.source, judge, out=args.out, tasks=_tasks(args), settings=public)
    finally:
        judge.close()
    print(format_overview(overview))
    tallies = [
        failures.Tally(f"judge {overview['judge']} on {task}", f["failed"], f["total"], f["reason"])
        for task, f in overview["failures"].items()
    ]
    return _status(tallies, args.max_failure_rate)


def _agree(args: argparse.Namespace) -> int:
    from llamavid_eval.judges.agreement import compare, to_markdown

    report = compare(args.a, args.b, examples=args.examples)
    print(
        json.dumps(report, indent=2, ensure_ascii=False) if args.json else to_markdown(report),
        end="\n" if args.json else "",
    )
    if report["matched"] == 0:
        tasks = f"tasks: {', '.join(report['tasks_a']) or 'none'} against {', '.join(report['tasks_b']) or 'none'}"
        print(
            f"error: no item of {args.a} ({report['n_a']} items) matches one of {args.b} ({report['n_b']} items; "
            f"{tasks}): items pair on task, id, question, answer and prediction; were both judged from one run?",
            file=sys.stderr,
        )
        return 1
    tallies = [
        failures.Tally(
            f"judge {side.upper()} ({getattr(args, side)})",
            report[f"failed_{side}"],
            report["matched"],
            failures.common_reason(r[side]["error"] for r in report["failed_items"] if r[side]["failed"]),
        )
        for side in ("a", "b")
    ]
    return _status(tallies, args.max_failure_rate)


def _swap(args: argparse.Namespace) -> int:
    from llamavid_eval.judges import swap
    from llamavid_eval.results import swap_report

    specs = swap.parse_judges(args.judges)
    reference = swap.reference_index(specs, swap.judge_settings(specs, _transport(args)), args.reference)
    exams: list[dict[str, Any]] = []

    def check(settings: JudgeSettings) -> None:  # every judge checked and examined before any is asked
        _checked(settings)
        exams.append(examine(settings, allow_unfit=args.allow_unfit))

    rows = swap.run_swap(args.runs, specs, args.out, tasks=_tasks(args), common=_transport(args), check=check)
    report = swap.analyse(
        rows,
        list(rows)[reference],
        examples=args.examples,
        max_failure_rate=args.max_failure_rate or None,  # unset: the judge budget ($LLAMAVID_JUDGE_MAX_FAILURE_RATE)
    )
    report["exams"] = {e["judge"]: e for e in exams}
    written = swap_report.write(report, args.out, plots=not args.no_plots)
    print(swap_report.to_markdown(report))
    print(f"wrote {', '.join(str(p) for p in written if p.suffix != '.svg')}", file=sys.stderr)
    return _status(swap.failure_tallies(rows), args.max_failure_rate)


if __name__ == "__main__":
    sys.exit(main())
