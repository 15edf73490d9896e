"""Stopping a judging run on Ctrl-C or SIGTERM without losing what it received.

Verdicts are cached as they arrive (:mod:`llamavid_eval.judges.engine`), so a stop costs only the
requests in flight. The commands turn both signals into :class:`Interrupted` (a ``KeyboardInterrupt``,
so no ``except Exception`` swallows it); the engine adds how many items have a cached verdict and how
many are left, and the command prints that as its last line and exits 128 + the signal number.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """A signal stopped judging. ``judge`` and the counts are filled in by the engine that was judging."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.judge: str | None = None
        self.cached = 0  # items of that judge's batch with a verdict in the cache
        self.left = 0  # items of that batch without one: what a rerun asks
        self.cache_off = False  # no cache: nothing was kept, a rerun asks everything again
        self.not_started: list[str] = []  # judges a swap had not begun when the signal came

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    def last_line(self) -> str:
        """What the command prints last: what was kept and what a rerun will ask."""
        name = signal.Signals(self.signum).name
        if self.judge is None:
            return f"interrupted by {name} before any item was sent; nothing was judged"
        later = f"; judges not started: {', '.join(self.not_started)}" if self.not_started else ""
        if self.cache_off:
            return (
                f"interrupted by {name}: judge {self.judge} had {self.left} item(s) to judge and the judge cache "
                f"is off, so nothing was kept{later}; a rerun asks every item again (set LLAMAVID_JUDGE_CACHE / "
                "--cache to keep verdicts)"
            )
        return (
            f"interrupted by {name}: judge {self.judge} has {self.cached} verdict(s) in the cache and "
            f"{self.left} item(s) left{later}; rerun the same command: it asks only the items without a cached verdict"
        )


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
