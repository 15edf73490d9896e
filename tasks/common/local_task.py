"""What our lmms-eval tasks share: the task class that reads its dataset from the data root, the way every
metric is computed once, and the hooks and scorer of the open-ended, LLM-judged video QA tasks.

**The task class.** lmms-eval's YAML ``dataset_path``/``data_files`` are fixed strings, so a root chosen by
an environment variable needs a task class (YAML key ``class``). Here ``dataset_path`` is the task family's
folder relative to ``$LLAMAVID_DATA_ROOT`` and ``dataset_kwargs`` may hold ``subset_size``/``subset_seed``
to evaluate a fixed, seeded subset (the ``*_mini`` tasks).

**Metrics, once per task and run.** lmms-eval calls one aggregation per metric, in the order
``process_results`` returned the metrics, so each task's first metric is aggregated by its *scorer*
(e.g. :func:`score`), which computes every metric of the task from the records and keeps them in
:attr:`LocalVideoTask.values`; the aggregation of every other metric is :func:`reported`, which returns
the value kept there. ``process_results`` returns the item's record once, under the first metric
(:func:`llamavid_eval.core.records.scored_results`).

**Judged video QA** (``msvd_qa``, ``msrvtt_qa``, ``animal_kingdom``; the scorer also serves
``ucf_crime_judged``): the hooks ``tasks/common/judged_qa.yaml`` names, and the judged metrics - every
item judged once, its verdict recorded once, every number from
:func:`llamavid_eval.core.scores.judged_scores`. The prompt is the question alone, as LLaMA-VID's
evaluation used it; the ``llamavid`` backend adds ``<image>\\n`` and the ``vicuna_v1`` conversation
template itself. ``process_results`` returns the item's record ``{id, question, answer, prediction,
video}`` under ``accuracy`` (:func:`judged_results`). lmms-eval aggregates ``accuracy`` first; its
aggregation is :func:`score`: it judges every item in ONE ``judge_many`` batch, writes each judgement
into its record (key ``judgement``; lmms-eval logs the samples after aggregating, so the verdict lands in
the logged sample), computes all judged metrics (VALID and ALL, intervals, failures) and keeps them on
the task; every other judged metric's aggregation is :func:`reported`. Above the failure budget
(``LLAMAVID_JUDGE_MAX_FAILURE_RATE``) the headline metrics are NaN and the log gets an ERROR line. A task
whose aggregations include :func:`score` checks its judge when it is built (:func:`check_judge`).
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from datasets import Dataset, DatasetDict
from lmms_eval.api.task import ConfigurableTask
from loguru import logger

from llamavid_eval.core.records import JUDGEMENT_KEY, load_split, qa_record, resolve_video, scored_results
from llamavid_eval.core.scores import HEADLINE, METRICS, judged_scores, verdict_of
from llamavid_eval.judges.base import JudgeRequest
from llamavid_eval.judges.exam import EXAM_KEY, examine
from llamavid_eval.judges.factory import build_judge, resolve_settings, task_metadata
from llamavid_eval.judges.preflight import check_once


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
        if score in super().aggregation().values():
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


# The judged video QA tasks.

SCORE_KEY = "item_value"
"""Each record's accuracy (0/100, failures left out): lmms-eval's Stderr_CLT / Stderr_Clustered columns
read it (the YAMLs set ``score_key: item_value``, ``cluster_key: video``)."""


def _judge_config(task_config: Any) -> Mapping[str, Any] | None:
    """The judge settings a task's YAML gives in its ``metadata`` (None: defaults and environment only)."""
    metadata = getattr(task_config, "metadata", None)
    return metadata if isinstance(metadata, Mapping) else None


def doc_to_visual(doc: dict[str, Any]) -> list[str]:
    return [resolve_video(doc["video"])]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc: dict[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any] | None]:
    """The item's record (naming its video) for the judge; judging happens once per task, in the aggregation."""
    return judged_results(qa_record(doc["id"], doc["question"], doc["answer"], results[0]), doc["video"])


def judged_results(record: dict[str, Any], video: str) -> dict[str, dict[str, Any] | None]:
    """``process_results``' return for a judged item: its record (naming its video) under ``accuracy``, None
    under the other judged metrics."""
    return scored_results({**record, "video": video}, METRICS)


def score(records: Sequence[dict[str, Any]], task: Any) -> float:
    """Aggregation of ``accuracy``: judge, record, compute every judged metric (kept on ``task.values``)."""
    config = _judge_config(task.config)
    settings = resolve_settings(config)
    judge = build_judge(settings)
    try:
        judgements = judge.judge_many([JudgeRequest(r["question"], r["answer"], r["prediction"]) for r in records])
    finally:
        judge.close()
    for record, judgement in zip(records, judgements, strict=True):
        record[JUDGEMENT_KEY] = judgement.to_dict()
    verdicts = [verdict_of(record, str(record["video"])) for record in records]
    result = judged_scores(verdicts, settings.max_failure_rate)
    for record, verdict in zip(records, verdicts, strict=True):
        value = None if result.over_budget else verdict.value("accuracy")
        if value is None:
            record.pop(SCORE_KEY, None)
        else:
            record[SCORE_KEY] = value
    task.values = result.values()
    name = getattr(task.config, "task", None) or "task"
    for metric in HEADLINE:
        logger.info(f"[{name}] {metric}: {result.intervals[metric].describe(digits=2)}")
    if (error := result.budget_error(name)) is not None:
        logger.error(error)
    return task.values["accuracy"]


def check_judge(task_config: Any) -> None:
    """Build the judge and check it against its server (``judges.preflight``) when the task is built, so a
    judge that cannot work stops the run in seconds, before the video model runs, not after it at aggregation.
    Raises ``JudgeUnavailable`` naming backend, URL, model, the server's reason and the fix. Then the judge
    sits the exam (``judges.exam``): an unfit one stops the run (``JudgeUnfit``: its figures and the way
    out); the exam record (figures, or why not examined) goes into the task's metadata (results.json)."""
    settings = resolve_settings(_judge_config(task_config))
    build_judge(settings).close()  # settings errors (unknown backend, no API key) before any request
    report = check_once(settings)
    if report is not None:  # the format the server honours, the model it answers as: for the user to see
        logger.info(report.summary())
    record = examine(settings)
    if getattr(task_config, "metadata", None) is None:
        task_config.metadata = {}
    if isinstance(task_config.metadata, MutableMapping):
        task_config.metadata[EXAM_KEY] = record
        task_config.metadata.update(task_metadata(settings))  # results.json names the judge used, not the YAML's
