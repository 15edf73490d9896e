"""Questions grouped into LLM batches by video, and the batches' frames prepared ahead of the GPU.

Video QA benchmarks ask ~25 questions per video and only the Q-Former/context step depends on the
question, so a batch holds questions sorted by video and carries each distinct video's pixels
once. Decoding and PIL preprocessing run in ``torch.utils.data.DataLoader`` worker *processes*,
so they overlap the GPU work without competing for the GIL with the thread that launches it: on
an H100 one 128-question batch is ~430 ms of CPU work in one process against ~410 ms of GPU work
(``benchmarks/stages.py``).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from llamavid_eval.model.processing import preprocess_frames


@dataclass
class Question:
    """One generation request: a question about the frames that ``load_frames`` returns."""

    question: str
    video_key: Hashable
    load_frames: Callable[[], Sequence[Any]]
    generation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    """Questions (by caller index) with their distinct videos' pixel values."""

    indices: list[int]
    pixel_values: torch.Tensor
    segments: list[tuple[int, int]]

    def pin_memory(self) -> Batch:
        """Page-locked pixels (DataLoader's ``pin_memory`` calls this), for an asynchronous copy."""
        return Batch(self.indices, self.pixel_values.pin_memory(), self.segments)


def plan_batches(questions: Sequence[Question], batch_size: int) -> list[list[int]]:
    """Caller indices grouped into batches of ``batch_size``, same video and generation settings adjacent."""
    order = sorted(
        range(len(questions)),
        key=lambda i: (repr(sorted(questions[i].generation.items())), repr(questions[i].video_key), i),
    )
    batches: list[list[int]] = []
    for index in order:
        same_settings = batches and questions[batches[-1][0]].generation == questions[index].generation
        if batches and same_settings and len(batches[-1]) < batch_size:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def prepare_batch(questions: Sequence[Question], indices: list[int], image_processor: Any) -> Batch:
    """Decode + preprocess the distinct videos of the questions at ``indices``."""
    pixel_chunks, segments, start_of = [], [], {}
    frame_count = 0
    for index in indices:
        key = questions[index].video_key
        if key not in start_of:
            pixels = preprocess_frames(image_processor, questions[index].load_frames())
            start_of[key] = (frame_count, pixels.shape[0])
            frame_count += pixels.shape[0]
            pixel_chunks.append(pixels)
        segments.append(start_of[key])
    return Batch(indices, torch.cat(pixel_chunks), segments)


class PlannedBatches(Dataset):
    """Item ``i`` is the prepared :class:`Batch` of ``plan[i]``."""

    def __init__(self, questions: Sequence[Question], plan: list[list[int]], image_processor: Any) -> None:
        self.questions, self.plan, self.image_processor = questions, plan, image_processor

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, item: int) -> Batch:
        return prepare_batch(self.questions, self.plan[item], self.image_processor)


def prepared_batches(
    questions: Sequence[Question], plan: list[list[int]], image_processor: Any, workers: int, pin_memory: bool
) -> Iterable[Batch]:
    """The plan's batches in order, prepared by ``workers`` processes up to two batches each ahead.

    ``workers=0`` prepares them in this process. Workers are forked where the platform allows it
    (they never touch the GPU), so ``load_frames`` callables need not be picklable there.
    """
    context = "fork" if workers and "fork" in multiprocessing.get_all_start_methods() else None
    return DataLoader(
        PlannedBatches(questions, plan, image_processor),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        pin_memory=pin_memory,
        multiprocessing_context=context,
    )
