"""``llamavid results``: leaderboards and paired run comparisons from lmms-eval output folders.

llamavid results table OUT_DIR [OUT_DIR ...] [--out DIR] [--latest|--all] [--sort METRIC] [--detail]
llamavid results compare RUN_A RUN_B [--task NAME] [--metric NAME] [--json]

Both exit non-zero when they fail or when judge failures exceed --max-failure-rate (default 0), with
the reason in the last line. A judged task whose failures exceed the judge failure budget
(--max-failure-rate when given, else $LLAMAVID_JUDGE_MAX_FAILURE_RATE, default 0.05) shows no score:
the table says "judge failed (f of n items)" and compare gives no verdict. Judge agreement is ``llamavid judge agree`` / ``llamavid judge swap``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llamavid_eval.core import scores as failures
from llamavid_eval.results import agreement, report, table
from llamavid_eval.results import compare as compare_mod
from llamavid_eval.results.load import REFERENCE_CSV, load_reference, load_runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamavid results", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tab = sub.add_parser("table", help="leaderboard (Markdown on stdout; .md, .csv, .html and plots in --out)")
    tab.add_argument(
        "paths", nargs="+", help="lmms-eval --output_path folders (searched recursively) or results.json files"
    )
    tab.add_argument("--out", type=Path, default=Path("leaderboard"), help="output folder (default: ./leaderboard)")
    which = tab.add_mutually_exclusive_group()
    which.add_argument(
        "--latest",
        dest="latest",
        action="store_true",
        default=True,
        help="repeats of a configuration: newest result per task wins (default)",
    )
    which.add_argument("--all", dest="latest", action="store_false", help="one row per results file")
    tab.add_argument(
        "--sort",
        metavar="METRIC",
        help="column to sort by: 'task/metric', a task ('msvd_qa': its headline metric) or a unique metric ('accuracy')",
    )
    tab.add_argument("--ascending", action="store_true", help="sort ascending (default: best first)")
    tab.add_argument(
        "--reference",
        choices=["matching", "all", "none"],
        default="matching",
        help="reported rows: only for measured tasks (default), all, none",
    )
    tab.add_argument(
        "--reference-file",
        type=Path,
        default=REFERENCE_CSV,
        help="reported numbers (default: the shipped reference.csv)",
    )
    tab.add_argument("--no-plots", action="store_true", help="skip matplotlib plots")
    tab.add_argument("--title", default="LLaMA-VID leaderboard")
    tab.add_argument("--detail", action="store_true", help="also per-class and diagnostic columns on stdout/.md")
    failures.add_argument(tab)
    tab.set_defaults(max_failure_rate=None)  # unset: exit on any failure; judged cells use the judge budget
    cmp = sub.add_parser("compare", help="paired comparison of two runs on the same task (B vs A)")
    cmp.add_argument("a", help="run A: lmms-eval output folder (--log_samples) or one *_samples_<task>.jsonl")
    cmp.add_argument("b", help="run B: the same for the other run")
    cmp.add_argument("--task", help="task to compare when the folders hold several")
    cmp.add_argument("--metric", help="per-item metric (default: accuracy, else exact_match, ..., mean_score)")
    cmp.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    failures.add_argument(cmp)
    cmp.set_defaults(max_failure_rate=None)
    return parser


def cmd_table(args: argparse.Namespace) -> int:
    runs, problems = load_runs(args.paths, args.max_failure_rate)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not runs:
        print(f"error: no readable lmms-eval results under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    board = table.build(runs, load_reference(args.reference_file), latest=args.latest, reference_mode=args.reference)
    if args.sort:
        try:
            board = table.sort(board, args.sort, descending=False if args.ascending else None)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
    _write(board, args)
    status = _failure_status(
        *table.judge_failures(board),
        args.max_failure_rate or 0.0,
        where="they are counted in the judge_failures column (--detail); `llamavid judge rejudge <run>` asks again",
    )
    if problems:  # the table shows what could be read, but a named input it could not read is a failure
        print(f"error: {len(problems)} input problem(s), left out of the table: {problems[0]}", file=sys.stderr)
        return 1
    return status


def _write(board: table.Leaderboard, args: argparse.Namespace) -> None:
    """Markdown on stdout; .md (the chosen view), .csv, .html (everything) and plots under ``--out``."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a folder (it is created when missing)")
    out.mkdir(parents=True, exist_ok=True)
    markdown = table.to_markdown(board, detail=args.detail)
    pairs = agreement.find_pairs(board.runs)
    sections, judge_md = [], []
    for index, pair in enumerate(pairs):
        stats = agreement.compare(pair.a, pair.b)
        sections.append(report.judge_section(pair, stats))
        judge_md.append(agreement.stats_markdown(pair, stats))
        agreement.side_by_side(pair).to_csv(out / f"judge_items_{index}_{report.slug(pair.task)}.csv", index=False)
    made = [] if args.no_plots else report.make_all(board.runs, pairs, out / "plots")
    judges = "\n## Judge comparison\n\n" + "\n".join(judge_md) if judge_md else ""
    (out / "leaderboard.md").write_text(markdown + judges, encoding="utf-8")
    table.to_csv(board, out / "leaderboard.csv")
    (out / "leaderboard.html").write_text(report.render(board, made, sections, title=args.title), encoding="utf-8")
    print(markdown)
    files = f"{out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, {out / 'leaderboard.html'}"
    print(f"wrote {files} and {sum(len(p) for _, p in made)} plot files", file=sys.stderr)


def cmd_compare(args: argparse.Namespace) -> int:
    report = compare_mod.compare_runs(
        args.a, args.b, task=args.task, metric=args.metric, max_failure_rate=args.max_failure_rate
    )
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else compare_mod.to_markdown(report))
    if not report["matched"]:
        print(f"error: {compare_mod.nothing_paired(report)}", file=sys.stderr)
        return 1
    return _failure_status(*compare_mod.failure_rate(report), args.max_failure_rate or 0.0)


def _failure_status(failed: int, total: int, max_rate: float, where: str = "see the failures above") -> int:
    message = failures.excess(failed, total, max_rate, where=where)
    if message:
        print(message, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return cmd_table(args) if args.command == "table" else cmd_compare(args)
    except (ValueError, OSError) as exc:  # OSError: an unreadable input, an --out that is a file, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
