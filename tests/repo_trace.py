"""Which repository files a run enters: the measure of issue 23 ("a judged question's trip from lmms-eval's
request to the leaderboard row enters at most 32 repository files").

A file counts when code of it ran: a function (``functions``: anything with a frame of its own - functions,
methods, lambdas, comprehensions) or only definitions on import (``modules``: module and class bodies).
``sys.setprofile`` / ``threading.setprofile`` see every Python frame that starts, in every thread (the judge
runs requests on threads); tests/ are left out. Use in a test (``with Trace() as trace: ...``) or around a
console entry point in another process:

    python tests/repo_trace.py OUT.json lmms-eval --model llamavid --tasks msvd_qa ...

writes ``{"functions": [...], "modules": [...]}`` (paths relative to the repository) when the command ends.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_SKIPPED = ("tests", ".venv")


class Trace:
    """Records the repository files whose code runs while it is active."""

    def __init__(self) -> None:
        self.functions: set[str] = set()
        self.modules: set[str] = set()
        self.calls: dict[str, set[str]] = {}  # file -> names of the functions that ran there
        self._known: dict[str, str | None] = {}

    def _relative(self, filename: str) -> str | None:
        if filename not in self._known:
            try:
                relative = Path(filename).resolve().relative_to(REPO)
            except ValueError:
                relative = None
            keep = relative is not None and relative.parts[0] not in _SKIPPED and relative.suffix == ".py"
            self._known[filename] = str(relative) if keep else None
        return self._known[filename]

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and (relative := self._relative(frame.f_code.co_filename)) is not None:
            if not frame.f_code.co_flags & inspect.CO_NEWLOCALS:  # a module or class body: definitions
                self.modules.add(relative)
            else:
                self.functions.add(relative)
                self.calls.setdefault(relative, set()).add(frame.f_code.co_qualname)

    def __enter__(self) -> Trace:
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]

    @property
    def files(self) -> set[str]:
        """Every file entered: a function ran in it or it was imported."""
        return self.functions | self.modules

    def to_dict(self) -> dict[str, Any]:
        calls = {file: sorted(names) for file, names in sorted(self.calls.items())}
        return {"functions": sorted(self.functions), "modules": sorted(self.modules), "calls": calls}


def main(argv: list[str]) -> int:
    """``repo_trace.py OUT.json COMMAND ARGS...``: run the console script COMMAND traced, write OUT.json."""
    out, command, *args = argv
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == command]
    sys.argv = [command, *args]
    trace = Trace()
    status: Any = 0
    try:
        with trace:
            status = script.load()()
    except SystemExit as stop:
        status = stop.code
    finally:
        Path(out).write_text(json.dumps(trace.to_dict(), indent=1))
    return status if isinstance(status, int) else (0 if status is None else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
