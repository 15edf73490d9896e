"""A lmms-eval task whose dataset is read from the data root at run time.

lmms-eval's YAML ``dataset_path``/``data_files`` are fixed strings, so a root chosen by an environment
variable needs a task class (YAML key ``class``). Here ``dataset_path`` is the task family's folder
relative to ``$LLAMAVID_DATA_ROOT`` and ``dataset_kwargs`` may hold ``subset_size``/``subset_seed`` to
evaluate a fixed, seeded subset (the ``*_mini`` tasks).

Metrics are computed once per task and run: lmms-eval calls one aggregation per metric, in the order
``process_results`` returned the metrics, so each task's first metric is aggregated by its *scorer*
(e.g. :func:`llamavid_eval.tasks.common.judged.score`), which computes every metric of the task from
the records and keeps them in :attr:`LocalVideoTask.values`; the aggregation of every other metric is
:func:`reported`, which returns the value kept there. ``process_results`` returns the item's record
once, under the first metric (:func:`llamavid_eval.core.records.scored_results`).
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset, DatasetDict
from lmms_eval.api.task import ConfigurableTask

from llamavid_eval.core.records import load_split
from llamavid_eval.tasks.common import judged


def seeded_subset(dataset: Dataset, size: int, seed: int) -> Dataset:
    """``size`` rows drawn with ``random.Random(seed)``, kept in dataset order (same data -> same subset)."""
    if size >= len(dataset):
        return dataset
    return dataset.select(sorted(random.Random(seed).sample(range(len(dataset)), size)))


class LocalVideoTask(ConfigurableTask):
    """ConfigurableTask reading ``$LLAMAVID_DATA_ROOT/<dataset_path>/<split>.jsonl``."""

    values: dict[str, float] | None = None
    """Every metric of this task's run, set by its scorer (the first metric's aggregation); see the module docstring."""

    def __init__(self, config: dict[str, Any], model_name: str | None = None) -> None:
        super().__init__(config={k: v for k, v in config.items() if k != "class"}, model_name=model_name)
        if judged.score in super().aggregation().values():
            judged.check_judge(self.config)

    def download(self, dataset_kwargs: dict[str, Any] | None = None) -> None:
        kwargs = dataset_kwargs or {}
        cfg = self.config
        splits = {s for s in (cfg.training_split, cfg.validation_split, cfg.test_split, cfg.fewshot_split) if s}
        self.dataset = DatasetDict({s: Dataset.from_list(load_split(self.DATASET_PATH, s)) for s in sorted(splits)})
        for split in self.dataset:
            if cfg.process_docs is not None:
                self.dataset[split] = cfg.process_docs(self.dataset[split])
            if "subset_size" in kwargs:
                self.dataset[split] = seeded_subset(
                    self.dataset[split], int(kwargs["subset_size"]), int(kwargs.get("subset_seed", 0))
                )
        self.dataset_no_image = self.dataset

    def aggregation(self) -> dict[str, Callable[..., Any]]:
        """Bind the task (``task``), the metric's name (``metric``) and the task config (``task_config``) to the
        aggregations whose signature asks for them."""
        return {name: _bind(fn, self, name) for name, fn in super().aggregation().items()}


def _bind(fn: Callable[..., Any], task: LocalVideoTask, metric: str) -> Callable[..., Any]:
    offered = {"task": task, "metric": metric, "task_config": task.config}
    kwargs = {k: v for k, v in offered.items() if k in inspect.signature(fn).parameters}
    return functools.partial(fn, **kwargs) if kwargs else fn


def reported(items: Sequence[Any], task: LocalVideoTask, metric: str) -> float:
    """Aggregation of every metric but the first: the value the task's scorer computed for it."""
    if task.values is None or metric not in task.values:
        raise RuntimeError(
            f"[{task.config.task}] {metric} aggregated before the task's scorer ran: process_results must return "
            "the scorer's metric first (tasks/common/local_task.py)"
        )
    return task.values[metric]
