"""Command line of the judges package.

Subcommands:

``llamavid judge rejudge SOURCE [--judge {openai,local,hf,exact}] [--judge-model M] [--base-url URL] [--out DIR]``
    Re-score an lmms-eval output folder (run with ``--log_samples``) or one ``*_samples_<task>.jsonl``
    with another judge, without re-running the video model. Writes, per run,
    ``<date>_<time>_rejudge_<judge>_summary.json`` (accuracy, mean_score, failures, n, judge per
    task) and ``..._items.jsonl`` (one judgement per item) beside the input, or under ``--out``.
    Unset options come from ``LLAMAVID_JUDGE*`` environment variables, then the defaults.

``llamavid judge agree A B [--json] [--examples N]``
    Compare two judges on the same items (items files written by ``rejudge``, or folders holding
    them): matched items, accuracy of each, % agreement, Cohen's kappa, Pearson/Spearman of scores,
    2x2 table, a few disagreements; items failed by either judge are listed separately. Markdown to
    stdout, or JSON with ``--json``.

Environment: LLAMAVID_JUDGE (openai|local|hf|exact), LLAMAVID_JUDGE_MODEL, LLAMAVID_JUDGE_BASE_URL,
LLAMAVID_JUDGE_CONCURRENCY, LLAMAVID_JUDGE_TIMEOUT, LLAMAVID_JUDGE_MAX_RETRIES,
LLAMAVID_JUDGE_PARSE_RETRIES, LLAMAVID_JUDGE_RESPONSE_FORMAT, LLAMAVID_JUDGE_BATCH_SIZE,
LLAMAVID_JUDGE_CACHE (folder, or "off"), LLAMAVID_JUDGE_API_KEY (local servers), OPENAI_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from llamavid_eval.judges.factory import BACKENDS, build_judge, resolve_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamavid judge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rejudge", help="re-score logged lmms-eval samples with another judge")
    r.add_argument("source", help="lmms-eval output folder (--log_samples) or one *_samples_<task>.jsonl")
    r.add_argument("--judge", choices=BACKENDS, help="backend (default: $LLAMAVID_JUDGE or openai)")
    r.add_argument("--judge-model", help="judge model name or, for hf, a local model folder")
    r.add_argument("--base-url", help="OpenAI-compatible endpoint (local backend)")
    r.add_argument("--out", help="write results here (mirroring the input folders) instead of beside the input")
    r.add_argument("--tasks", help="comma-separated task names to re-judge (default: all)")
    r.add_argument("--concurrency", type=int)
    r.add_argument("--timeout", type=float, help="seconds per request")
    r.add_argument("--max-retries", type=int, help="retries per request on timeouts, 429, 5xx, connection errors")
    r.add_argument("--parse-retries", type=int, help="re-asks after an unparseable reply")
    r.add_argument("--cache", help='cache folder, or "off"')
    a = sub.add_parser("agree", help="agreement between two judges on the same items")
    a.add_argument("a", help="items .jsonl written by rejudge, or a folder with them (judge A)")
    a.add_argument("b", help="the same for judge B")
    a.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    a.add_argument("--examples", type=int, default=5, help="disagreements / failures to show (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "rejudge":
            return _rejudge(args)
        return _agree(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _rejudge(args: argparse.Namespace) -> int:
    from llamavid_eval.judges.rejudge import format_overview, rejudge

    overrides = {"backend": args.judge, "model": args.judge_model, "base_url": args.base_url,
                 "concurrency": args.concurrency, "timeout": args.timeout, "max_retries": args.max_retries,
                 "parse_retries": args.parse_retries, "cache": args.cache}
    settings = resolve_settings(overrides=overrides)
    judge = build_judge(settings)
    try:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
        overview = rejudge(args.source, judge, out=args.out, tasks=tasks, settings=settings.public())
    finally:
        judge.close()
    print(format_overview(overview))
    return 0


def _agree(args: argparse.Namespace) -> int:
    from llamavid_eval.judges.agreement import compare, to_markdown

    report = compare(args.a, args.b, examples=args.examples)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else to_markdown(report), end="\n" if args.json else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
