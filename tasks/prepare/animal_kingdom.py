"""Animal Kingdom video grounding turned into QA, as the reproduction study did.

Input: ``train.txt`` / ``test.txt`` with one segment per line, ``<video code> <start> <end>##<sentence>``,
and a folder of ``<code>.mp4``. Each video code becomes one item: the fixed question below and, as the
reference answer, all its sentences in file order joined by spaces. A raw annotation that already is a
sentence (starts with an article) is kept (capitalised, final period added when missing); otherwise it
becomes "The <annotation>." (e.g. "bird is flying" -> "The bird is flying.").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llamavid_eval.core.records import conversation_record
from llamavid_eval.tasks.prepare.common import (
    SplitReport,
    VideoLinker,
    available_splits,
    bad_row,
    read_text,
    require_dir,
    write_split,
)

FAMILY = "animal_kingdom"
QUESTION = (
    "Find the action each animal performs in the video. "
    "Provide independent sentences for each animal and their corresponding action."
)
LINE_FIX = "Lines must read '<video code> <start> <end>##<sentence>', e.g. 'AAACXZTV 1.5 4.0##The bird is flying.'"
_LINE = re.compile(r"^(?P<code>\S+)\s+(?P<start>\S+)\s+(?P<end>\S+)\s*##(?P<sentence>.*\S.*)$")
_ARTICLE = re.compile(r"^(the|a|an)\b", re.IGNORECASE)


def to_sentence(raw: str) -> str:
    text = raw.strip()
    if not _ARTICLE.match(text):
        text = f"The {text[0].lower()}{text[1:]}"
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else f"{text}."


def read_segments(path: Path, report: SplitReport, skip_bad_rows: bool) -> dict[str, list[str]]:
    """Video code -> its sentences, both in file order.

    With ``--skip-bad-rows`` a code one of whose segment lines was bad is dropped whole: the joined
    reference would silently miss that animal's action."""
    by_code: dict[str, list[str]] = {}
    broken: dict[str, int] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        try:
            valid = match is not None and float(match["start"]) <= float(match["end"])
        except ValueError:
            valid = False
        if not valid:
            bad_row(
                report,
                skip_bad_rows,
                path,
                number,
                f"not a '<code> <start> <end>##<sentence>' segment: {line.strip()!r}",
                LINE_FIX,
                line,
            )
            broken.setdefault(line.split()[0], number)
            continue
        by_code.setdefault(match["code"], []).append(to_sentence(match["sentence"]))
    for code, number in broken.items():
        if by_code.pop(code, None) is not None:
            report.skip(str(path), f"video code {code}", f"reference incomplete: its segment on line {number} was bad")
    return by_code


def prepare(
    annotations: Path, videos: Path, root: Path, copy: bool, skip_bad_rows: bool
) -> tuple[list[SplitReport], list[Path]]:
    """Write ``test.jsonl`` and ``train.jsonl`` + ``train_instruct.json`` from ``<annotations>/{train,test}.txt``.

    Either file may be absent (evaluation needs only ``test.txt``): that split is reported as missing.
    """
    require_dir(videos, "Animal Kingdom video folder", "Pass the folder holding <code>.mp4 with --videos.")
    present, reports = available_splits(
        {split: annotations / f"{split}.txt" for split in ("train", "test")},
        FAMILY,
        "Animal Kingdom {split} annotations",
        "Pass the video-grounding annotation folder (with train.txt and/or test.txt) with --annotations.",
    )
    linker = VideoLinker(videos, root, FAMILY, copy)
    files: list[Path] = []
    for split, source in present.items():
        report = SplitReport(FAMILY, split)
        records: list[dict[str, Any]] = []
        for code, sentences in read_segments(source, report, skip_bad_rows).items():
            video = linker.link(code, report, source, f"video code {code}", {"code": code})
            if video is not None:
                records.append({"id": code, "video": video, "question": QUESTION, "answer": " ".join(sentences)})
        instruct = (
            [conversation_record(r["id"], r["video"], r["question"], r["answer"]) for r in records]
            if split == "train"
            else None
        )
        files += write_split(root, report, records, instruct)
        reports.append(report)
    return reports, files
