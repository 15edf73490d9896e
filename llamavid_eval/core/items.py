"""Per-item values of a task metric, read back from logged samples: the input of every interval and paired test.

lmms-eval keeps only the aggregate in results.json; the samples file keeps each item's record. Which
per-item number stands behind a metric follows the record shapes of :mod:`llamavid_eval.core.outputs`:
a judgement gives ``100 * verdict`` for accuracy metrics and ``score`` for score metrics (a failed
judgement gives no value: excluded from the denominator, counted apart); ``{gold, pred}`` gives
``100 * (gold == pred)``; a ``correct`` flag gives ``100 * correct``; a plain number is taken as it is.
A judged metric (``accuracy``, ``mean_score`` and their ``_all`` forms) takes each item's recorded verdict as
:class:`llamavid_eval.core.scores.Verdict` reads it, wherever in the sample the judgement was logged.
A metric named ``<acc>_<word>`` averages only the items one of whose text fields is ``<word>``
(``acc_arson`` -> gold ``Arson``; ``accuracy_colour`` -> question_type ``colour``). A record that
carries ``item_value`` (our tasks write it for lmms-eval's stderr columns) is taken at its word:
that value, and no value = not an item of this metric (unless its judgement failed). Metrics that are not
means of items (``macro_accuracy``, counts such as ``unmapped``) give None.

Items are keyed by ``doc_id`` (the same item in two runs of a task) and clustered by the video they
are about: the record's ``video`` key, else the logged doc's, else the item itself (unclustered).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llamavid_eval.core.outputs import is_judgement, judgement_failed, normalize_judgement
from llamavid_eval.core.scores import MEASURES, item_video, judged_items
from llamavid_eval.core.stats import PERCENT
from llamavid_eval.core.ucf import NORMAL, UNMAPPED

#: Where a task writes each item's value for a metric (lmms-eval's ``score_key``), when it does.
ITEM_VALUE_KEY = "item_value"
_ACCURACY_NAMES = ("accuracy", "acc", "exact_match", "gpt_eval_accuracy")
_NOT_ITEM_MEANS = ("macro_accuracy", "judge_failures", "judged_items", "unmapped", "excluded_videos")


@dataclass(frozen=True)
class ItemValue:
    key: str  # doc_id as text
    cluster: str  # video id, or the key when the record names no video
    value: float | None  # None: judge failure, excluded from the metric
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class MetricItems:
    """The items behind one metric of one samples file."""

    task: str
    metric: str
    items: list[ItemValue]
    clustered: bool  # at least one item named its video

    @property
    def valid(self) -> list[ItemValue]:
        return [it for it in self.items if it.value is not None]

    @property
    def failures(self) -> int:
        return sum(it.value is None for it in self.items)

    @property
    def binary(self) -> bool:
        """Yes/no per item (0 or 100): McNemar applies."""
        return bool(self.valid) and all(it.value in (0.0, 100.0) for it in self.valid)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The values' range when known: percent correct per item (0 or 100); None for scores."""
        return PERCENT if self.binary and "score" not in self.metric else None

    def mean(self) -> float | None:
        valid = self.valid
        return sum(it.value for it in valid) / len(valid) if valid else None  # type: ignore[misc]


def _subset_word(metric: str) -> tuple[str, str | None]:
    """``acc_arson`` -> (``acc``, ``arson``); ``accuracy`` -> (``accuracy``, None)."""
    for base in sorted(_ACCURACY_NAMES, key=len, reverse=True):
        if metric.startswith(base + "_"):
            return base, metric[len(base) + 1 :].casefold()
    return metric, None


def _in_subset(record: dict[str, Any], word: str | None) -> bool:
    """Whether the item belongs to a subset metric's class or type (``acc_arson``: gold class Arson);
    what the model predicted never decides it."""
    if word is None:
        return True
    fields = {k: v for k, v in record.items() if k not in ("pred", "prediction")}
    return any(isinstance(v, str) and v.casefold() == word for v in fields.values())


def _side(cls: Any) -> bool | None:
    return None if cls == UNMAPPED else cls == NORMAL


def record_value(record: Any, metric: str) -> tuple[bool, float | None]:
    """(applies, value) of one logged record for ``metric``; value None = failed judgement."""
    base, _ = _subset_word(metric)
    if isinstance(record, bool) or isinstance(record, (int, float)):
        return (False, None) if isinstance(record, float) and math.isnan(record) else (True, float(record))
    if not isinstance(record, dict):
        return False, None
    flat = normalize_judgement(record)
    if "gold" in flat and "pred" in flat:
        if base == "binary_accuracy":
            return True, 100.0 * (_side(flat["pred"]) == _side(flat["gold"]))
        return (base in _ACCURACY_NAMES), 100.0 * (flat["gold"] == flat["pred"])
    if isinstance(flat.get("correct"), bool) and base in _ACCURACY_NAMES:
        return True, 100.0 * flat["correct"]
    if "prediction" in flat and any(k in flat for k in ("verdict", "score", "failed")):
        if judgement_failed(flat):
            return True, None
        if "score" in base:
            return True, float(flat["score"])
        if base in _ACCURACY_NAMES:
            return True, 100.0 * bool(flat["verdict"])
    return False, None


def metric_items(samples: Iterable[dict[str, Any]], task: str, metric: str) -> MetricItems | None:
    """The per-item values behind ``metric`` in logged samples (or re-judge items lines, filtered to
    ``task``), or None when the metric is not a mean of items."""
    name = metric.split("[")[0]
    if name in _NOT_ITEM_MEANS:
        return None
    rows = [s for s in samples if s.get("task", task) == task]
    if name in MEASURES and (judged := judged_items(rows)):
        items = [ItemValue(key, v.cluster or f"doc:{key}", v.value(name), record) for key, v, record in judged]
        return MetricItems(task, metric, items, clustered=any(v.cluster is not None for _, v, _ in judged))
    base, word = _subset_word(name)
    records = [(s, s if _is_items_line(s) else _logged(s, name, base, word)) for s in rows]
    marked = any(isinstance(r, dict) and ITEM_VALUE_KEY in r for _, r in records)
    items: list[ItemValue] = []
    for position, (sample, record) in enumerate(records):
        if marked:  # the task wrote each item's value itself: no derivation
            if isinstance(record, dict) and not _in_subset(record, word):
                continue  # another class or type than the subset metric's
            value = record.get(ITEM_VALUE_KEY) if isinstance(record, dict) else None
            flat = normalize_judgement(record) if isinstance(record, dict) else {}
            if value is None and not (is_judgement(flat) and judgement_failed(flat)):
                continue  # an item this metric does not cover (e.g. another class): not a judge failure
        else:
            applies, value = record_value(record, name)
            if not applies:
                return None
            if isinstance(record, dict) and not _in_subset(record, word):
                continue
        key = str(sample.get("doc_id", position))
        video = item_video(sample, record)
        shown = record if isinstance(record, dict) else {}
        items.append(ItemValue(key, video if video is not None else f"doc:{key}", value, shown))
    clustered = any(not it.cluster.startswith("doc:") for it in items)
    return MetricItems(task, metric, items, clustered) if items else None


def _logged(sample: dict[str, Any], name: str, base: str, word: str | None) -> Any:
    """The record behind ``name`` in a samples line: its own, or for a class or type subset (``accuracy_colour``,
    ``acc_arson``) whose item the task logged once, under the base metric, the base metric's record."""
    own = sample.get(name)
    return sample.get(base) if own is None and word is not None else own


def _is_items_line(sample: dict[str, Any]) -> bool:
    """A ``judges rejudge`` items line: the judgement itself, with ``task`` and ``doc_id``."""
    return "task" in sample and "doc_id" in sample and is_judgement(sample)
