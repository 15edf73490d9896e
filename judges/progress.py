"""Progress of a judging batch: a tqdm bar on a terminal, a log line now and then otherwise.

Judging 270 items against a CPU server takes minutes; without a sign of life a user cannot tell a
slow judge from a hung one. The bar goes to stderr (stdout carries the reports) as lmms-eval's own
bars do; where stderr is not a terminal (CI, a log file) the ``judges.progress`` logger says how far
it got every :data:`EVERY` seconds, and the commands switch that logger on.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("judges.progress")
EVERY = 30.0  # seconds between progress lines when there is no bar


class Progress:
    """Counts final outcomes of ``total`` items, ``done`` of them known at the start (cache hits)."""

    def __init__(self, judge: str, total: int, done: int = 0) -> None:
        self.judge, self.total, self.done, self.failed = judge, total, done, 0
        self._bar = tqdm(
            total=total, initial=done, desc=f"judging ({judge})", unit="item", file=sys.stderr, leave=False,
            disable=not sys.stderr.isatty(),
        )  # fmt: skip
        self._last = time.monotonic()

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self._bar.update(1)
        if failed:
            self._bar.set_postfix(failed=self.failed, refresh=False)
        if self._bar.disable and time.monotonic() - self._last >= EVERY:
            self._last = time.monotonic()
            log.info("judge %s: %d of %d items judged (%d failed)", self.judge, self.done, self.total, self.failed)

    def close(self) -> None:
        self._bar.close()
