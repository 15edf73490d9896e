"""How our commands end when they fail: non-zero, with the reason on the last line of output.

Scripts chain commands (``llamavid prepare ... && lmms-eval ...``) and users read the end of a log,
so the reason must be the last thing printed. Errors a command expects (its own error types, a
missing file) print one ``error: ...`` line and no traceback; anything else prints its traceback
first (it is a bug or an environment problem we did not foresee), then the same one-line summary.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

FAILED = 1
INTERRUPTED = 130  # 128 + SIGINT, as shells report it
WORKER_TRACEBACK = "Original Traceback (most recent call last):"  # torch.utils.data's ExceptionWrapper


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message would put its reason above the end). An
    error that torch re-raised from a DataLoader worker carries the worker's whole traceback in its
    message: only its last line, the original error, is the reason."""
    lines = [part.strip() for part in str(error).splitlines() if part.strip()]
    if any(line.startswith(WORKER_TRACEBACK) for line in lines):
        return lines[-1]
    return " ".join(lines) or type(error).__name__


def run_command(body: Callable[[], int | None], expected: tuple[type[BaseException], ...], prog: str) -> int:
    """Run a command's body; return its exit status, ``FAILED`` with the reason printed last on failure."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:  # Ctrl-C: no traceback; the shell's convention for SIGINT
        sys.stdout.flush()
        print(f"error: {prog}: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return INTERRUPTED
    except expected as error:
        reason = one_line(error)
    except Exception as error:  # unforeseen: keep the traceback for the bug report, reason still last
        sys.stdout.flush()
        traceback.print_exc()
        reason = f"unexpected {type(error).__name__}: {one_line(error)}"
    sys.stdout.flush()
    print(f"error: {prog}: {reason}", file=sys.stderr, flush=True)
    return FAILED
