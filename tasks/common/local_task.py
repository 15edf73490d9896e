"""A lmms-eval task whose dataset is read from the data root at run time.

lmms-eval's YAML ``dataset_path``/``data_files`` are fixed strings, so a root chosen by an environment
variable needs a task class (YAML key ``class``). Here ``dataset_path`` is the task family's folder
relative to ``$LLAMAVID_DATA_ROOT`` and ``dataset_kwargs`` may hold ``subset_size``/``subset_seed`` to
evaluate a fixed, seeded subset (the ``*_mini`` tasks).
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable
from typing import Any

from datasets import Dataset, DatasetDict
from llamavid_eval.tasks.common.judged import JUDGED_AGGREGATIONS, check_judge
from lmms_eval.api.task import ConfigurableTask

from llamavid_eval.core.paths import load_split


def seeded_subset(dataset: Dataset, size: int, seed: int) -> Dataset:
    """``size`` rows drawn with ``random.Random(seed)``, kept in dataset order (same data -> same subset)."""
    if size >= len(dataset):
        return dataset
    return dataset.select(sorted(random.Random(seed).sample(range(len(dataset)), size)))


class LocalVideoTask(ConfigurableTask):
    """ConfigurableTask reading ``$LLAMAVID_DATA_ROOT/<dataset_path>/<split>.jsonl``."""

    def __init__(self, config: dict[str, Any], model_name: str | None = None) -> None:
        super().__init__(config={k: v for k, v in config.items() if k != "class"}, model_name=model_name)
        if any(fn in JUDGED_AGGREGATIONS for fn in super().aggregation().values()):
            check_judge(self.config)

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
        """Bind the task config to aggregations that ask for it (judge settings, task name)."""
        return {name: _bind_config(fn, self.config) for name, fn in super().aggregation().items()}


def _bind_config(fn: Callable[..., Any], config: Any) -> Callable[..., Any]:
    if "task_config" in inspect.signature(fn).parameters:
        return functools.partial(fn, task_config=config)
    return fn
