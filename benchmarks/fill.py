"""The video side of a run's first batch, with no GPU work: how long the workers take to start and
to hand over each of the first batches' decoded, preprocessed videos (``LlamaVidRunner.prepared``, as the
runner calls it). A whole run's first batch waits for its videos before the GPU has any work; if
a later batch's videos take about as long as the GPU spends on a batch, decoding is a bound too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from llamavid_eval.model.inference import LlamaVidRunner, Question


def decode_fill(questions: Sequence[Question], runner: LlamaVidRunner, batches: int = 6) -> dict[str, object]:
    """Seconds from the call until each of the first ``batches`` batches of ``runner``'s plan is
    ready on the host (as the runner prepares them: pinned pixels on CUDA), and the mean
    interval after the first (the workers' steady rate). The runner's first batch holds one video
    per worker, so its time is the workers' start plus one video each."""
    started = time.perf_counter()
    ready = []
    for _ in runner.prepared(questions, runner.plan(questions)[:batches]):
        ready.append(time.perf_counter() - started)
    return {
        "workers": runner.decode_workers,
        "batch_size": runner.batch_size,
        "ready_s": [round(t, 4) for t in ready],
        "later_interval_s": round((ready[-1] - ready[0]) / (len(ready) - 1), 4) if len(ready) > 1 else None,
    }
