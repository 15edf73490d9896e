"""``llamavid results``: leaderboards and judge comparisons from lmms-eval output folders.

    llamavid results table OUT_DIR [OUT_DIR ...] [--out DIR] [--latest|--all] [--sort METRIC]
    llamavid results judges SAMPLES_A.jsonl SAMPLES_B.jsonl [--task NAME] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llamavid_eval.results import agreement, html, plots, table
from llamavid_eval.results.load import load_runs
from llamavid_eval.results.reference import REFERENCE_CSV, load_reference


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamavid results", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tab = sub.add_parser("table", help="leaderboard (Markdown on stdout; .md, .csv, .html and plots in --out)")
    tab.add_argument("paths", nargs="+", help="lmms-eval --output_path folders (searched recursively) or results.json files")
    tab.add_argument("--out", type=Path, default=Path("leaderboard"), help="output folder (default: ./leaderboard)")
    which = tab.add_mutually_exclusive_group()
    which.add_argument("--latest", dest="latest", action="store_true", default=True, help="repeats of a configuration: newest result per task wins (default)")
    which.add_argument("--all", dest="latest", action="store_false", help="one row per results file")
    tab.add_argument("--sort", metavar="METRIC", help="column to sort by: 'task/metric' or a unique part ('msvd_qa', 'accuracy')")
    tab.add_argument("--ascending", action="store_true", help="sort ascending (default: best first)")
    tab.add_argument("--reference", choices=["matching", "all", "none"], default="matching", help="reported rows: only for measured tasks (default), all, none")
    tab.add_argument("--reference-file", type=Path, default=REFERENCE_CSV, help="reported numbers (default: the shipped reference.csv)")
    tab.add_argument("--no-plots", action="store_true", help="skip matplotlib plots")
    tab.add_argument("--title", default="LLaMA-VID leaderboard")
    jud = sub.add_parser("judges", help="compare two judges on the same predictions (two samples .jsonl files)")
    jud.add_argument("a", type=Path)
    jud.add_argument("b", type=Path)
    jud.add_argument("--task", default="", help="task name for titles (default: file name)")
    jud.add_argument("--out", type=Path, default=Path("judge_comparison"))
    return parser


def cmd_table(args: argparse.Namespace) -> int:
    runs, problems = load_runs(args.paths)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not runs:
        print("error: no readable lmms-eval results found", file=sys.stderr)
        return 1
    board = table.build(runs, load_reference(args.reference_file), latest=args.latest, reference_mode=args.reference)
    if args.sort:
        try:
            board = table.sort(board, args.sort, descending=False if args.ascending else None)
        except KeyError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    markdown = table.to_markdown(board)
    pairs = agreement.find_pairs(board.runs)
    sections, judge_md = [], []
    for index, pair in enumerate(pairs):
        stats, provider = agreement.compare(pair.a, pair.b)
        sections.append(html.judge_section(pair, stats, provider))
        judge_md.append(agreement.stats_markdown(pair, stats, provider))
        agreement.side_by_side(pair).to_csv(out / f"judge_items_{index}_{plots.slug(pair.task)}.csv", index=False)
    made = [] if args.no_plots else plots.make_all(board.runs, pairs, out / "plots")
    (out / "leaderboard.md").write_text(markdown + ("\n## Judge comparison\n\n" + "\n".join(judge_md) if judge_md else ""), encoding="utf-8")
    table.to_csv(board, out / "leaderboard.csv")
    (out / "leaderboard.html").write_text(html.render(board, made, sections, title=args.title), encoding="utf-8")
    print(markdown)
    print(f"wrote {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, {out / 'leaderboard.html'} and {sum(len(p) for _, p in made)} plot files", file=sys.stderr)
    return 0


def cmd_judges(args: argparse.Namespace) -> int:
    try:
        pair = agreement.pair_from_files(args.a, args.b, task=args.task)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not pair.ids:
        print("error: no items with the same id and prediction in both files", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    stats, provider = agreement.compare(pair.a, pair.b)
    markdown = agreement.stats_markdown(pair, stats, provider)
    agreement.side_by_side(pair).to_csv(args.out / "judge_items.csv", index=False)
    made = [("Judge agreement", plots.agreement_matrix(pair, args.out / "judge_agreement"))]
    (args.out / "judge_comparison.md").write_text(markdown, encoding="utf-8")
    page_board = table.build([], [], reference_mode="none")
    (args.out / "judge_comparison.html").write_text(html.render(page_board, made, [html.judge_section(pair, stats, provider)], title=pair.title), encoding="utf-8")
    print(markdown)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return cmd_table(args) if args.command == "table" else cmd_judges(args)


if __name__ == "__main__":
    sys.exit(main())
