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


def index_videos(folder: Path) -> dict[str, Path]:
    """File name -> path for every video under ``folder`` (recursively); also keyed by stem."""
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            index.setdefault(path.name, path)
            index.setdefault(path.stem, path)
    return index


class VideoLinker:
    """Places raw videos under ``<root>/<family>/videos`` and returns their root-relative paths."""

    def __init__(self, root: Path, family: str, copy: bool) -> None:
        self.root, self.family, self.copy = root, family, copy
        (root / family / "videos").mkdir(parents=True, exist_ok=True)
        self._problems: dict[Path, str | None] = {}

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
        relative = Path(self.family) / "videos" / source.name
        target = self.root / relative
        if target.is_symlink() or target.exists():
            target.unlink()
        if self.copy:
            shutil.copy2(source, target)
        else:
            os.symlink(source.resolve(), target)
        return relative.as_posix()


def write_split(
    root: Path, report: SplitReport, records: list[dict[str, Any]], instruct: list[dict[str, Any]] | None = None
) -> list[Path]:
    """Write the split's JSONL (+ training JSON when given) and its report; return the files written."""
    folder = root / report.family
    folder.mkdir(parents=True, exist_ok=True)
    if not records:
        raise PrepareError(
            f"No usable rows for {report.family}/{report.split}: {len(report.skipped)} skipped "
            f"(first reason: {report.skipped[0]['reason'] if report.skipped else 'input was empty'})."
        )
    report.written = len(records)
    data = folder / f"{report.split}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    written = [data]
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


def summarize_run(reports: list[SplitReport], files: list[Path]) -> str:
    """Human summary: counts per split, skip reasons with counts, files written."""
    lines = []
    for r in reports:
        if r.missing:
            lines.append(f"{r.family}/{r.split}: not prepared ({r.missing})")
            continue
        lines.append(f"{r.family}/{r.split}: wrote {r.written} records, skipped {len(r.skipped)}")
        reasons: dict[str, int] = {}
        for row in r.skipped:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        lines += [f"  skipped {n} x {reason}" for reason, n in sorted(reasons.items())]
    lines += [f"  wrote {f}" for f in files]
    return "\n".join(lines)
