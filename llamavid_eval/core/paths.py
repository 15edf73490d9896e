"""One place that decides where prepared datasets and their videos live.

Every task reads ``$LLAMAVID_DATA_ROOT/<family>/<split>.jsonl`` and resolves the ``video`` field of a
record (a path relative to the data root) against the same root, so a prepared folder can be moved
or mounted elsewhere by changing one environment variable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DATA_ROOT_ENV = "LLAMAVID_DATA_ROOT"
DEFAULT_DATA_ROOT = "~/.cache/llamavid-eval/data"


class DatasetNotPreparedError(FileNotFoundError):
    """The prepared split a task needs is missing; the message says which prepare command writes it."""


def data_root() -> Path:
    """The data root: ``$LLAMAVID_DATA_ROOT`` or ``~/.cache/llamavid-eval/data``, made absolute."""
    return Path(os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser().absolute()


def split_file(family: str, split: str, root: Path | None = None) -> Path:
    return (root or data_root()) / family / f"{split}.jsonl"


def load_split(family: str, split: str) -> list[dict[str, Any]]:
    """Read a prepared split; a missing or empty file raises with the command that writes it."""
    path = split_file(family, split)
    hint = (
        f"Run `llamavid prepare {family} --help` to see how to prepare it "
        f"(it writes to ${DATA_ROOT_ENV}, currently {data_root()})."
    )
    if not path.is_file():
        raise DatasetNotPreparedError(f"Prepared dataset {path} not found. {hint}")
    with path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    if not records:
        raise DatasetNotPreparedError(f"Prepared dataset {path} has no records. {hint}")
    return records


def resolve_video(relative: str, root: Path | None = None) -> str:
    """Absolute path of a record's video (relative to the data root: ``root``, else ``$LLAMAVID_DATA_ROOT``).

    The one rule for every record that names a video (tasks, demo, training); raises naming the path
    and where the root came from.
    """
    base = root if root is not None else data_root()
    path = base / relative
    if not path.is_file():
        source = f"the data root {base}" if root is not None else f"${DATA_ROOT_ENV}={base}"
        raise FileNotFoundError(
            f"Video {path} not found ({relative!r} under {source}). "
            f"Point the data root at the folder `llamavid prepare` wrote, or re-run the prepare command."
        )
    return str(path)
