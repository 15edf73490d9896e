"""Pauses of Python's cyclic garbage collector during a timed run (``gc.callbacks``).

A full collection walks every tracked object (~0.5M once torch, transformers and lmms-eval are
imported): a pause of the thread that launches the GPU's work, which per-batch times show as one
long batch. The benchmarks record the pauses beside their figures.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator


@contextlib.contextmanager
def collector_pauses() -> Iterator[dict[str, list[float]]]:
    """The main process's cyclic-collector pauses while the block runs, per generation: [count,
    total s, longest s] (``gc.callbacks``): a full collection of the libraries' and model's objects
    is a pause of the loop that launches the GPU's work."""
    pauses: dict[str, list[float]] = {}
    began = [0.0]

    def note(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        spent = time.perf_counter() - began[0]
        count, total, longest = pauses.get(str(info["generation"]), [0, 0.0, 0.0])
        pauses[str(info["generation"])] = [count + 1, round(total + spent, 4), round(max(longest, spent), 4)]

    gc.callbacks.append(note)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(note)
