"""What every prepare subcommand shares: errors that say how to fix, video linking, outputs, the report.

Layout written under the data root ``R`` for a task family ``F``:
``R/F/videos/<file>`` (symlinks to the raw videos, or copies with ``--copy``), ``R/F/<split>.jsonl``
(one record per line, ``video`` relative to ``R``), ``R/F/<split>_instruct.json`` (LLaVA conversation
records for the training module, train splits only) and ``R/F/prepare_report_<split>.json`` (counts
and every skipped row with its reason).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamavid_eval.core.exits import one_line
from llamavid_eval.model.video import VideoDecodeError, count_frames

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")


class PrepareError(Exception):
    """A problem in the raw data the user must fix; the message names the file, line and the fix."""


def require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise PrepareError(f"{what} not found: {path}. {fix}")
    return path


def read_text(path: Path) -> str:
    """A raw annotation file's text: UTF-8, with or without the byte-order mark that Windows editors add."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise PrepareError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}). Save it as UTF-8, e.g. "
            f"iconv -f latin1 -t utf-8 {path} > fixed_{path.name}, and pass the converted file."
        ) from error


def require_dir(path: Path, what: str, fix: str) -> Path:
    if not path.is_dir():
        raise PrepareError(f"{what} not found: {path}. {fix}")
    return path


@dataclass
class SplitReport:
    """Rows written and rows skipped (with reasons) for one split; never drop a row silently."""

    family: str
    split: str
    written: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    missing: str | None = None  # why the split was not prepared (its source file is absent)

    def skip(self, source: str, line: int | str, reason: str, row: Any = None) -> None:
        self.skipped.append({"file": source, "line": line, "reason": reason, "row": row})


def available_splits(
    sources: dict[str, Path | None], family: str, what: str, fix: str
) -> tuple[dict[str, Path], list[SplitReport]]:
    """The splits whose source file exists, and a report for each missing one (never silently dropped).

    Evaluation needs only the test split and fine-tuning only the train split, so a missing split is
    reported, not fatal; the run fails only when no split's source exists. ``what`` names a source,
    with ``{split}`` in it (``"UCF-Crime {split} list"``).
    """
    present = {split: path for split, path in sources.items() if path is not None and path.is_file()}
    missing = [
        SplitReport(
            family,
            split,
            missing=f"{what.format(split=split)} not found: {path}" if path else f"no {what.format(split=split)} given",
        )
        for split, path in sources.items()
        if split not in present
    ]
    if not present:
        raise PrepareError("; ".join(str(r.missing) for r in missing) + f". {fix}")
    return present, missing


def bad_row(
    report: SplitReport, skip_bad_rows: bool, source: Path, line: int | str, problem: str, fix: str, row: Any
) -> None:
    """Raise for a malformed row, or record it as skipped when ``--skip-bad-rows`` was given."""
    if not skip_bad_rows:
        raise PrepareError(
            f"{source}:{line}: {problem}. {fix} (or pass --skip-bad-rows to skip such rows and list them in the report)"
        )
    report.skip(str(source), line, problem, row)


def video_key(name: str) -> str:
    """A lookup key for a listed file name: the video extension's case does not matter
    (``Explosion002_x264.mp4`` finds ``Explosion002_x264.MP4``); the stem's does (file systems differ)."""
    path = Path(name)
    return path.stem + path.suffix.lower() if path.suffix.lower() in VIDEO_EXTENSIONS else name


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, symlinked sub-folders followed (each real folder once: no cycles).

    ``Path.rglob`` does not follow symlinked folders, and a raw dataset is often assembled from them."""
    seen: set[str] = set()
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirectories.clear()
            continue
        seen.add(real)
        subdirectories.sort()
        yield from (Path(directory) / name for name in sorted(files))


def index_videos(folder: Path) -> dict[str, list[Path]]:
    """Lookup key (:func:`video_key` of the file name, and the stem) -> every video under ``folder`` with it."""
    index: dict[str, list[Path]] = {}
    for path in walk_files(folder):
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            for key in dict.fromkeys((video_key(path.name), path.stem)):
                index.setdefault(key, []).append(path)
    return index


class VideoLinker:
    """Finds each listed video under the raw video folder and places it under ``<root>/<family>/videos``."""

    def __init__(self, videos: Path, root: Path, family: str, copy: bool) -> None:
        self.videos, self.root, self.family, self.copy = videos, root, family, copy
        self.index = index_videos(videos)
        (root / family / "videos").mkdir(parents=True, exist_ok=True)
        self._problems: dict[Path, str | None] = {}
        self._placed: dict[Path, str] = {}

    def link(self, name: str, report: SplitReport, source: Path, line: int | str, row: dict[str, Any]) -> str | None:
        """The root-relative path of video ``name``, or None with the row recorded as skipped and why
        (not found, two files match, unreadable): rows are never dropped silently."""
        found = self.index.get(video_key(name), [])
        if not found:
            problem, row = "video not found", {**row, "searched": str(self.videos)}
        elif len(found) > 1:
            problem = f"ambiguous: {len(found)} videos match ({', '.join(map(str, found))}); keep one of them"
        else:
            problem = self.problem(found[0])
        if problem is None:
            return self.place(found[0])
        report.skip(str(source), line, problem, row)
        return None

    def problem(self, source: Path) -> str | None:
        """Why ``source`` cannot be evaluated (empty, damaged, no frames), or None.

        Found here, from the container's header (no decoding), rather than when lmms-eval reaches the
        video hours into a run and stops it. Each file is probed once."""
        if source not in self._problems:
            try:
                count_frames(source)
                self._problems[source] = None
            except (VideoDecodeError, OSError) as error:
                self._problems[source] = f"unreadable video: {one_line(error)}"
        return self._problems[source]

    def place(self, source: Path) -> str:
        """Link (or copy) ``source`` to ``<family>/videos/<name>``; return that root-relative path.

        Written beside the target, then renamed over it: the old entry is never removed first, so a
        raw video that already sits in (or is reached through) the target folder is never lost."""
        if source in self._placed:
            return self._placed[source]
        relative = Path(self.family) / "videos" / source.name
        target, real = self.root / relative, source.resolve(strict=True)
        there = target.exists() and os.path.samefile(target, real) and not (self.copy and target.is_symlink())
        if not there:  # (a link where --copy asks for a copy is replaced by one)
            temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
            temporary.unlink(missing_ok=True)
            if self.copy:
                shutil.copy2(real, temporary)
            else:
                os.symlink(real, temporary)
            os.replace(temporary, target)
        self._placed[source] = relative.as_posix()
        return self._placed[source]


def write_split(
    root: Path, report: SplitReport, records: list[dict[str, Any]], instruct: list[dict[str, Any]] | None = None
) -> list[Path]:
    """Write the split's JSONL (+ training JSON when given) and its report; return the files written.

    A split with no usable rows gets only its report (which lists every skipped row); whether the
    run failed is decided over all splits (:func:`no_usable_rows`)."""
    folder = root / report.family
    folder.mkdir(parents=True, exist_ok=True)
    report.written = len(records)
    written = []
    if records:
        written.append(folder / f"{report.split}.jsonl")
        written[-1].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        if instruct is not None:
            written.append(folder / f"{report.split}_instruct.json")
            written[-1].write_text(json.dumps(instruct, indent=1, ensure_ascii=False), encoding="utf-8")
    written.append(folder / f"prepare_report_{report.split}.json")
    summary = {
        "family": report.family,
        "split": report.split,
        "written": report.written,
        "skipped": len(report.skipped),
    }
    written[-1].write_text(
        json.dumps({**summary, "skipped_rows": report.skipped}, indent=1, default=str), encoding="utf-8"
    )
    return written


def first_reason(report: SplitReport) -> str:
    return report.skipped[0]["reason"] if report.skipped else "input was empty"


def no_usable_rows(reports: list[SplitReport]) -> PrepareError | None:
    """The run's failure when no split got a single usable row (each split's report says why), else None."""
    if any(r.written for r in reports):
        return None
    return PrepareError(
        "No usable rows for "
        + "; ".join(
            f"{r.family}/{r.split}: " + (r.missing or f"{len(r.skipped)} skipped (first reason: {first_reason(r)})")
            for r in reports
        )
        + ". Check the video folder and the annotation files against the skipped rows listed above."
    )


def summarize_run(reports: list[SplitReport], files: list[Path]) -> str:
    """Human summary: counts per split, skip reasons with counts, files written."""
    lines = []
    for r in reports:
        if r.missing:
            lines.append(f"{r.family}/{r.split}: not prepared ({r.missing})")
            continue
        if not r.written:
            lines.append(f"{r.family}/{r.split}: not prepared (no usable rows: skipped {len(r.skipped)})")
        else:
            lines.append(f"{r.family}/{r.split}: wrote {r.written} records, skipped {len(r.skipped)}")
        reasons: dict[str, int] = {}
        for row in r.skipped:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        lines += [f"  skipped {n} x {reason}" for reason, n in sorted(reasons.items())]
    lines += [f"  wrote {f}" for f in files]
    return "\n".join(lines)
