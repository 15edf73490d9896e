"""``llamavid prepare <dataset> ...`` (console script ``llamavid prepare``): raw public layout ->
the local dataset the lmms-eval tasks read from ``$LLAMAVID_DATA_ROOT/<dataset>/``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from llamavid_eval.core.exits import run_command
from llamavid_eval.core.records import DATA_ROOT_ENV, data_root
from llamavid_eval.tasks.prepare import animal_kingdom, ucf_crime, video_qa
from llamavid_eval.tasks.prepare.common import PrepareError, no_usable_rows, summarize_run


def split_name(text: str) -> str:
    """A split becomes a file name (``<split>.jsonl``) inside the dataset's folder, never a path."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use letters, digits, '_', '-' or '.' (e.g. test, train, val)")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamavid prepare", description=__doc__)
    sub = parser.add_subparsers(dest="dataset", required=True)
    for family in ("msvd_qa", "msrvtt_qa"):
        p = sub.add_parser(family, help=f"{family}: QA JSON + video folder (LLaMA-VID's release)")
        p.add_argument(
            "--qa", type=Path, required=True, help="JSON list of {video_id, question, id, answer} (e.g. test_qa.json)"
        )
        p.add_argument("--videos", type=Path, required=True, help="folder of <video_id>.mp4/.avi/.mov/.mkv")
        p.add_argument(
            "--split",
            default="test",
            type=split_name,
            help="split name to write (default test; 'train' also writes train_instruct.json)",
        )
    p = sub.add_parser("ucf_crime", help="UCF-Crime: video folder + split lists")
    p.add_argument("--videos", type=Path, required=True, help="extracted UCF_Crimes folder (searched recursively)")
    p.add_argument(
        "--test-list",
        type=Path,
        help="Anomaly_Test.txt or Temporal_Anomaly_Annotation_for_Testing_Videos.txt (this and/or --train-list)",
    )
    p.add_argument("--train-list", type=Path, help="Anomaly_Train.txt (also writes train_instruct.json)")
    p = sub.add_parser("animal_kingdom", help="Animal Kingdom video grounding: train.txt/test.txt + video folder")
    p.add_argument(
        "--annotations",
        type=Path,
        required=True,
        help="folder holding test.txt and/or train.txt (a missing one is reported)",
    )
    p.add_argument("--videos", type=Path, required=True, help="folder of <video code>.mp4")
    for p in sub.choices.values():
        p.add_argument(
            "--root", type=Path, default=None, help=f"data root to write to (default ${DATA_ROOT_ENV} or {data_root()})"
        )
        p.add_argument("--copy", action="store_true", help="copy videos into the root instead of symlinking them")
        p.add_argument(
            "--skip-bad-rows",
            action="store_true",
            help="skip malformed rows (listed in the report) instead of stopping",
        )
    return parser


def run(args: argparse.Namespace) -> str:
    """Prepare one dataset; return the summary of what was written and skipped."""
    root = (args.root or data_root()).expanduser().absolute()
    common = {"root": root, "copy": args.copy, "skip_bad_rows": args.skip_bad_rows}
    if args.dataset in ("msvd_qa", "msrvtt_qa"):
        reports, files = video_qa.prepare(args.dataset, args.qa, args.videos, args.split, **common)
    elif args.dataset == "ucf_crime":
        reports, files = ucf_crime.prepare(args.videos, args.test_list, args.train_list, **common)
    else:
        reports, files = animal_kingdom.prepare(args.annotations, args.videos, **common)
    if failure := no_usable_rows(reports):
        print(summarize_run(reports, files))
        raise failure
    note = "" if root == data_root() else f"\nSet {DATA_ROOT_ENV}={root} when running the tasks."
    return summarize_run(reports, files) + note


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when prepared, 1 with ``error: <reason>`` as the last line when not, 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: print(run(args)), (PrepareError, OSError), "llamavid prepare")
