"""Confusion matrix of a ``ucf_crime`` run: rows = gold class, columns = predicted class + ``UNMAPPED``.

Written at aggregation time as ``<task>_confusion_<timestamp>.csv`` and ``.json`` into
``$LLAMAVID_CONFUSION_DIR`` if set, else into lmms-eval's ``--output_path`` folder; with neither (a
Python ``simple_evaluate`` call) only the log gets it. It can always be rebuilt from the logged samples
(every sample carries ``{"gold", "pred"}`` under each metric key):
``python -m llamavid_eval.tasks.ucf_crime.confusion out/<model>/<date>_samples_ucf_crime.jsonl``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llamavid_eval.core.ucf import CLASSES, UNMAPPED, confusion_counts, samples_pairs

CONFUSION_DIR_ENV = "LLAMAVID_CONFUSION_DIR"
COLUMNS = (*CLASSES, UNMAPPED)


def confusion_matrix(records: Iterable[Mapping[str, Any]]) -> list[list[int]]:
    """Counts, ``matrix[i][j]`` = videos of class ``CLASSES[i]`` predicted as ``COLUMNS[j]``."""
    gold_labels, pred_labels, counts = confusion_counts((r["gold"], r["pred"]) for r in records)
    if (tuple(gold_labels), tuple(pred_labels)) != (CLASSES, COLUMNS):
        raise ValueError(f"records hold labels outside UCF-Crime's classes: {sorted(set(gold_labels) - set(CLASSES))}")
    return counts


def to_csv(matrix: Sequence[Sequence[int]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["gold\\pred", *COLUMNS])
    writer.writerows([cls, *row] for cls, row in zip(CLASSES, matrix, strict=True))
    return buffer.getvalue()


def output_dir(cli_args: Any) -> Path | None:
    """``$LLAMAVID_CONFUSION_DIR``, else the folder of lmms-eval's ``--output_path``, else None."""
    if os.environ.get(CONFUSION_DIR_ENV):
        return Path(os.environ[CONFUSION_DIR_ENV]).expanduser()
    output_path = getattr(cli_args, "output_path", None)
    if not output_path:
        return None
    path = Path(output_path).expanduser()
    return path.parent if path.suffix == ".json" else path


def write(records: Sequence[Mapping[str, Any]], task: str, cli_args: Any) -> Path | None:
    """Write the CSV and JSON for ``task``; return the JSON path (None when there is nowhere to write)."""
    folder = output_dir(cli_args)
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    matrix = confusion_matrix(records)
    created = datetime.now(timezone.utc)
    stem = folder / f"{task}_confusion_{created:%Y%m%dT%H%M%S_%f}Z"  # UTC, as every date we write
    stem.with_suffix(".csv").write_text(to_csv(matrix), encoding="utf-8")
    meta = {
        "task": task,
        "model": getattr(cli_args, "model", None),
        "model_args": getattr(cli_args, "model_args", None),
        "created": created.isoformat(timespec="seconds"),
    }
    payload = {**meta, "n": len(records), "rows": list(CLASSES), "columns": list(COLUMNS), "matrix": matrix}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return stem.with_suffix(".json")


def records_from_samples(path: Path) -> list[Mapping[str, Any]]:
    """The ``{"gold", "pred"}`` records of an lmms-eval samples JSONL of the ``ucf_crime`` task."""
    return [{"gold": gold, "pred": pred} for gold, pred in samples_pairs(path)]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m llamavid_eval.tasks.ucf_crime.confusion <samples_ucf_crime.jsonl>")
    sys.stdout.write(to_csv(confusion_matrix(records_from_samples(Path(sys.argv[1])))))
