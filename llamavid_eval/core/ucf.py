"""UCF-Crime's classes as its file names spell them, and the confusion counts every view shares.

``RoadAccidents001_x264.mp4`` -> ``RoadAccidents``; ``Normal_Videos_003_x264.mp4`` -> ``Normal``.
A model answer that maps to no class is ``UNMAPPED`` (a column of its own, never a class).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from llamavid_eval.core.outputs import iter_samples, metric_records

ANOMALY_CLASSES = (
    "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting",
    "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism",
)  # fmt: skip
NORMAL = "Normal"
CLASSES = (*ANOMALY_CLASSES, NORMAL)
UNMAPPED = "UNMAPPED"

_FILE_PREFIX = re.compile(r"^(?P<prefix>[A-Za-z]+(?:_[A-Za-z]+)*?)_?\d+")


def class_from_filename(name: str) -> str | None:
    """The class a UCF-Crime file name encodes, or None when the prefix is not a known class."""
    match = _FILE_PREFIX.match(name)
    if not match:
        return None
    prefix = match.group("prefix")
    if prefix.lower() in ("normal_videos", "normal"):
        return NORMAL
    return prefix if prefix in ANOMALY_CLASSES else None


def confusion_counts(pairs: Iterable[tuple[str, str]]) -> tuple[list[str], list[str], list[list[int]]]:
    """(gold labels, predicted labels, counts) for (gold, predicted) pairs.

    Rows are the 14 classes in :data:`CLASSES` order, columns the same plus ``UNMAPPED``; a label
    outside them (another dataset's class) gets a row/column of its own rather than being dropped.
    """
    pairs = list(pairs)
    seen = {label for pair in pairs for label in pair}
    extra = sorted(seen - set(CLASSES) - {UNMAPPED})
    gold_labels = [*CLASSES, *extra]
    pred_labels = [*gold_labels, UNMAPPED]
    counts = [[0] * len(pred_labels) for _ in gold_labels]
    for gold, pred in pairs:
        counts[gold_labels.index(gold)][pred_labels.index(pred)] += 1
    return gold_labels, pred_labels, counts


def samples_pairs(path: Path) -> list[tuple[str, str]]:
    """(gold, predicted) class pairs of a ``ucf_crime`` samples file, one per item."""
    pairs = []
    for sample in iter_samples(path):
        for record in metric_records(sample).values():
            if "gold" in record and "pred" in record:
                pairs.append((str(record["gold"]), str(record["pred"])))
                break
    return pairs
