"""UCF-Crime: videos anywhere under one folder (``Anomaly-Videos-Part-*/<Class>/``,
``Testing_Normal_Videos_Anomaly/`` ...), split lists ``Anomaly_Test.txt`` / ``Anomaly_Train.txt``
(``Abuse/Abuse028_x264.mp4``) or, for the test split, the temporal annotation file
(``Abuse028_x264.mp4  Abuse  165  240  -1  -1``). The class is the file-name prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamavid_eval.core.records import conversation_record
from llamavid_eval.core.ucf import NORMAL, class_from_filename
from llamavid_eval.tasks.prepare.common import (
    VIDEO_EXTENSIONS,
    SplitReport,
    VideoLinker,
    available_splits,
    bad_row,
    read_text,
    require_dir,
    write_split,
)
from llamavid_eval.tasks.ucf_crime.labels import MC_PROMPT, mc_answer

FAMILY = "ucf_crime"
LIST_FIX = "Lines must start with a video file name such as Abuse028_x264.mp4 or Abuse/Abuse028_x264.mp4, whose prefix is a UCF-Crime class."


def read_list(path: Path, report: SplitReport, skip_bad_rows: bool) -> list[tuple[int, str, str]]:
    """``(line number, file name, class)`` for each entry of a split list or the temporal annotation file."""
    entries, seen = [], set()
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        name = line.split()[0].replace("\\", "/").rsplit("/", 1)[-1]
        cls = class_from_filename(name)
        if not name.lower().endswith(VIDEO_EXTENSIONS) or cls is None:
            bad_row(
                report,
                skip_bad_rows,
                path,
                number,
                f"cannot read a UCF-Crime video name from {line.strip()!r}",
                LIST_FIX,
                line,
            )
            continue
        if name in seen:
            bad_row(
                report, skip_bad_rows, path, number, f"{name} is listed twice (it would count twice)", LIST_FIX, line
            )
            continue
        seen.add(name)
        entries.append((number, name, cls))
    return entries


def prepare_split(
    split: str, listing: Path, linker: VideoLinker, root: Path, skip_bad_rows: bool
) -> tuple[SplitReport, list[Path]]:
    report = SplitReport(FAMILY, split)
    records: list[dict[str, Any]] = []
    for number, name, cls in read_list(listing, report, skip_bad_rows):
        video = linker.link(name, report, listing, number, {"file": name})
        if video is not None:
            records.append({"id": Path(name).stem, "video": video, "label": cls, "is_anomaly": cls != NORMAL})
    instruct = (
        [conversation_record(r["id"], r["video"], MC_PROMPT, mc_answer(r["label"])) for r in records]
        if split == "train"
        else None
    )
    return report, write_split(root, report, records, instruct)


def prepare(
    videos: Path, test_list: Path | None, train_list: Path | None, root: Path, copy: bool, skip_bad_rows: bool
) -> tuple[list[SplitReport], list[Path]]:
    """Write ``test.jsonl`` and/or ``train.jsonl`` + ``train_instruct.json`` from the lists that exist.

    A list not given or not found is reported as a missing split; the run fails only when both are.
    """
    require_dir(
        videos,
        "UCF-Crime video folder",
        "Pass the extracted UCF_Crimes folder (it is searched recursively) with --videos.",
    )
    lists, reports = available_splits(
        {"test": test_list, "train": train_list},
        FAMILY,
        "UCF-Crime {split} list",
        "Pass Anomaly_Test.txt (or Temporal_Anomaly_Annotation_for_Testing_Videos.txt) with --test-list "
        "and/or Anomaly_Train.txt with --train-list.",
    )
    linker = VideoLinker(videos, root, FAMILY, copy)
    files: list[Path] = []
    for split, path in lists.items():
        report, written = prepare_split(split, path, linker, root, skip_bad_rows)
        reports.append(report)
        files += written
    return reports, files
