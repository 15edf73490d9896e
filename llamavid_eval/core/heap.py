"""The Python heap frozen while a batch loop runs (``gc.freeze``).

The video model's runner and the in-process judge run loops that launch GPU work batch after batch;
a full collection of the cyclic garbage collector in the middle walks every object alive (~0.5M
once torch, transformers and lmms-eval are imported) and pauses the loop: 0.33-0.35 s on an H100
host, once in a 13,520-question run (benchmarks/RESULTS.md, twenty-third session).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects alive now (libraries, the model, the questions) out of the cyclic garbage
    collector while the batches run, as Python's ``gc.freeze`` documentation advises before forking
    workers: a full collection otherwise walks them all (~0.5M objects; 0.33-0.35 s on an H100
    host, once in a 13,520-question run, benchmarks/RESULTS.md), a pause of the loop that launches
    the GPU's work, and a forked worker's collections write to the parent's
    object pages (copy-on-write). Objects still go when their last reference does; only cycles
    among them wait until the heap is unfrozen at the end (unless someone else froze it first)."""
    already_frozen = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not already_frozen:
            gc.unfreeze()
