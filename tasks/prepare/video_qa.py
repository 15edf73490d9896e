"""MSVD-QA / MSRVTT-QA as LLaMA-VID distributes them: a JSON list of ``{video_id, question, id, answer}``
records next to a folder of videos named ``<video_id>.<mp4|avi|mov|mkv>``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llamavid_eval.core.records import conversation_record
from llamavid_eval.tasks.prepare.common import (
    PrepareError,
    SplitReport,
    VideoLinker,
    bad_row,
    read_text,
    require_dir,
    require_file,
    write_split,
)

REQUIRED_KEYS = ("video_id", "question", "id", "answer")


def load_qa(path: Path) -> list[Any]:
    require_file(
        path,
        "QA file",
        "Pass the JSON list of QA records (e.g. test_qa.json from the LLaMA-VID data release) with --qa.",
    )
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}:{err.lineno}: not valid JSON ({err.msg}). Fix the file or re-download it.") from err
    if not isinstance(data, list):
        raise PrepareError(f"{path}: expected a JSON list of QA records, found {type(data).__name__}.")
    return data


def row_problem(row: Any) -> str | None:
    """Why a QA record cannot be used, or None."""
    if not isinstance(row, dict):
        return f"record is a {type(row).__name__}, not an object"
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        return f"record lacks {', '.join(missing)}"
    empty = [k for k in REQUIRED_KEYS if row[k] is None or not str(row[k]).strip()]
    return f"record has empty {', '.join(empty)}" if empty else None


def prepare(
    family: str, qa: Path, videos: Path, split: str, root: Path, copy: bool, skip_bad_rows: bool
) -> tuple[list[SplitReport], list[Path]]:
    """Write ``<root>/<family>/<split>.jsonl`` (+ ``<split>_instruct.json`` for the train split)."""
    rows = load_qa(qa)
    require_dir(
        videos,
        "Video folder",
        f"Pass the folder holding the {family} videos (named <video_id>.mp4/.avi/...) with --videos.",
    )
    linker, report = VideoLinker(videos, root, family, copy), SplitReport(family, split)
    records, seen_ids = [], set()
    for number, row in enumerate(rows):
        problem = row_problem(row)
        if not problem and str(row["id"]) in seen_ids:
            problem = f"id {row['id']!r} already used by an earlier record (a duplicate would count twice)"
        if problem:
            bad_row(
                report,
                skip_bad_rows,
                qa,
                f"record {number}",
                problem,
                f"Each record needs {', '.join(REQUIRED_KEYS)}, none of them empty, and an id of its own",
                row,
            )
            continue
        video_id = str(row["video_id"])
        video = linker.link(video_id, report, qa, f"record {number}", {"video_id": video_id})
        if video is None:
            continue
        seen_ids.add(str(row["id"]))
        records.append(
            {
                "id": str(row["id"]),
                "video_id": video_id,
                "question": str(row["question"]),
                "answer": str(row["answer"]),
                "video": video,
            }
        )
    instruct = (
        [conversation_record(str(r["id"]), r["video"], r["question"], r["answer"]) for r in records]
        if split == "train"
        else None
    )
    return [report], write_split(root, report, records, instruct)
