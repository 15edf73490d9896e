"""How requests go to a judge server: how many are in flight, when to stop sending, what a failure means.

:class:`AdaptiveLimit` is AIMD (as TCP does it). It starts low (:data:`START` in flight): a server that
answers one request at a time (``transformers serve``, llama.cpp without parallel slots) only queues
more, and 64 queued requests turned into 60 s timeouts and retries. It grows up to ``maximum`` only
while replies come back about as fast as the fastest seen: a server that batches (vLLM, SGLang) keeps
its latency as the load grows and earns its slots, one that queues does not. Growth is TCP's: one slot
per success at first (the limit doubles each round: 4 to 64 in four rounds), one per round after the
first overload or slowed reply. A 429, 5xx or timeout halves the limit (at most once per round, so
one burst of refusals does not collapse it to 1). :class:`CircuitBreaker` ends a batch against a judge
that is plainly down instead of retrying every remaining item on its own. :func:`run_each` runs the
requests on daemon threads, so that Ctrl-C does not wait for the ones in flight. :class:`Progress`
shows how far a batch got.

:func:`classify` tells what a failed request *means*. Status codes alone mislead: llama-cpp-python
answers a rejected ``response_format`` with HTTP 500 (a format problem, not a crash), FastAPI servers
answer a wrong model name with 400 and put the reason in ``{"detail": ...}``, which the ``openai``
client leaves out of its exception text. So an error is classified by status *and* by the words of
the server's message, and that message is kept - once per run (:class:`MessageBook`): a 500 with a
traceback repeated in the metadata of every item buries the one line that matters.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import openai
from tqdm import tqdm

log = logging.getLogger("judges")
T = TypeVar("T")
START = 4  # requests in flight before the server has shown it can take more
SLOWER = 2.0  # a reply this many times slower than the fastest seen: requests are queueing, do not grow


class AdaptiveLimit:
    """A concurrency bound between 1 and ``maximum`` that shrinks on overload and grows back on success."""

    def __init__(self, maximum: int, start: int = START) -> None:
        if maximum < 1 or start < 1:
            raise ValueError(f"concurrency must be >= 1, got {maximum} (start {start})")
        self.maximum = maximum
        self.limit = float(min(start, maximum))
        self.active = 0
        self._fastest = float("inf")
        self._slow_start = True  # +1 per success until the server first shows a limit, then +1/limit
        self._last_cut = float("-inf")
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Hold one in-flight slot; yields the start time, to pass to :meth:`overloaded`."""
        with self._cond:
            while self.active >= int(self.limit):
                self._cond.wait()
            self.active += 1
            started = time.monotonic()
        try:
            yield started
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify()

    def succeeded(self, seconds: float | None = None) -> None:
        """One more slot per round, unless this reply (``seconds`` long) shows requests queueing."""
        with self._cond:
            if seconds is not None:
                self._fastest = min(self._fastest, seconds)
                if seconds > SLOWER * self._fastest:
                    self._slow_start = False
                    return
            if self.limit < self.maximum:
                grown = min(self.maximum, self.limit + (1.0 if self._slow_start else 1.0 / self.limit))
                if int(grown) > int(self.limit):
                    self._cond.notify()
                self.limit = grown

    def overloaded(self, started: float) -> None:
        """Halve the limit, unless a request sent after the last cut already did (one cut per round)."""
        with self._cond:
            if started <= self._last_cut:
                return
            self.limit = max(1.0, self.limit / 2)
            self._slow_start = False
            self._last_cut = time.monotonic()
            log.info("judge client: server overloaded, concurrency limit now %d", int(self.limit))


class CircuitBreaker:
    """Trips after ``threshold`` consecutive failures of one kind; any success resets the count.

    With many requests in flight, a server restarting for a second fails them all at once, so for
    kinds in ``patient`` (connection failures) the streak must also have lasted ``window`` seconds:
    a blip is ridden out by the retries, a server that stays down still stops the batch in seconds.
    """

    def __init__(self, threshold: int = 10, window: float = 3.0, patient: tuple[str, ...] = ("connection",)) -> None:
        if threshold < 1 or window < 0:
            raise ValueError(f"need breaker threshold >= 1 and window >= 0, got {threshold} and {window}")
        self.threshold = threshold
        self.window = window
        self.patient = patient
        self._lock = threading.Lock()
        self._kind: str | None = None
        self._count = 0
        self._since = 0.0
        self.reason: str | None = None
        self.stopped = threading.Event()  # set when tripped: wakes requests sleeping in backoff

    def reset(self) -> None:
        with self._lock:
            self._kind, self._count, self.reason = None, 0, None
            self.stopped.clear()

    def succeeded(self) -> None:
        with self._lock:
            self._kind, self._count = None, 0

    def failed(self, kind: str, reason: str, judge: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            now = time.monotonic()
            if kind != self._kind:
                self._kind, self._count, self._since = kind, 0, now
            self._count += 1
            lasted = now - self._since
            if self._count < self.threshold or (kind in self.patient and lasted < self.window):
                return
            self.reason = (
                f"judge stopped after {self._count} consecutive {kind} failures in {lasted:.1f} s; last: {reason}"
            )
            self.stopped.set()
        log.error(
            "judge %s: %s. The remaining items of this batch are recorded as failed (not cached: a rerun "
            "asks them again).",
            judge,
            self.reason,
        )


def run_each(
    tasks: Sequence[Callable[[], T]], workers: int, on_result: Callable[[int, T], None], stop: threading.Event
) -> None:
    """Run ``tasks`` on up to ``workers`` threads; ``on_result(i, result)`` in the caller's thread as each ends.

    Hand-written rather than ``concurrent.futures``: its worker threads are joined when the interpreter
    exits, so after Ctrl-C the process would wait out every request in flight (up to the timeout, plus
    retries). These are daemon threads; an exception in the caller (the signal) sets ``stop`` so that no
    task starts after it, and the process may exit at once. A task must not raise."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(tasks)):
        todo.put(index)
    done: queue.SimpleQueue[tuple[int, T]] = queue.SimpleQueue()

    def work() -> None:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            done.put((index, tasks[index]()))

    for _ in range(min(workers, len(tasks))):
        threading.Thread(target=work, daemon=True, name="judge-request").start()
    try:
        for _ in range(len(tasks)):
            on_result(*done.get())
    finally:
        stop.set()


# --- Progress of a judging batch: a tqdm bar on stderr (stdout carries the reports), as lmms-eval's bars do;
# where stderr is not a terminal (CI, a log file) the judges.progress logger says how far it got every
# EVERY seconds, so a slow judge can be told from a hung one.
progress_log = logging.getLogger("judges.progress")
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
            progress_log.info(
                "judge %s: %d of %d items judged (%d failed)", self.judge, self.done, self.total, self.failed
            )

    def close(self) -> None:
        self._bar.close()


# --- What a failed request means: the server's own reason, and what to do about it.
MESSAGE_LIMIT = 400  # characters of a server's message kept in a recorded failure
SHORT = 160  # characters of a reason an item carries; a longer one is cited by reference


class Kind(str, Enum):
    """What to do after an error."""

    FORMAT = "format"  # the server rejects the response_format: ask again with less structure
    MODEL = "model"  # the model is not served: permanent
    AUTH = "auth"  # key missing or rejected: permanent
    FORBIDDEN = "forbidden"  # key accepted, request not allowed: permanent
    QUOTA = "quota"  # the account's quota is used up (OpenAI's 429 insufficient_quota): permanent
    BAD_REQUEST = "bad_request"  # this request is refused (e.g. too long): permanent for the item
    CONNECTION = "connection"  # nothing answered: transient, but a down server trips the breaker
    TRANSIENT = "transient"  # timeout, 429, genuine 5xx: retry with backoff

    @property
    def permanent(self) -> bool:
        return self in (Kind.MODEL, Kind.AUTH, Kind.FORBIDDEN, Kind.QUOTA, Kind.BAD_REQUEST)


@dataclass(frozen=True)
class ErrorInfo:
    """A classified error: ``kind``, the HTTP status (None without a reply) and a one-line ``reason``."""

    kind: Kind
    status: int | None
    reason: str

    def __str__(self) -> str:
        return self.reason


# Words of a server rejecting structured output (vLLM, SGLang, llama.cpp, llama-cpp-python, OpenAI).
_FORMAT_WORDS = re.compile(r"response_format|response format|json_schema|json_object|guided|grammar", re.IGNORECASE)
# Words of "this model is not here": OpenAI's model_not_found, FastAPI servers pinned to one model.
_MODEL_WORDS = re.compile(
    r"model_not_found|pinned to|(model\b.{0,80}\b(does not exist|not found|not exist|unknown|not served|no such|"
    r"not available|not loaded|is not supported))|(unknown|invalid|no such) model",
    re.IGNORECASE | re.DOTALL,
)
# Statuses that mean "not now" whatever the words say ("model is loading, retry", "guided decoding
# backend busy"). 500 is not among them: llama-cpp-python rejects a response_format with a 500.
_RETRY_STATUS = {408, 409, 425, 429, 502, 503, 504}
_QUOTA_WORDS = re.compile(r"insufficient_quota|exceeded your current quota", re.IGNORECASE)
Redact = Callable[[str], str]


def _keep(text: str) -> str:
    return text


def server_message(err: BaseException, redact: Redact = _keep) -> str:
    """The server's own words: ``error.message``, FastAPI's ``detail`` or the raw body; else the exception text.

    ``redact`` masks secrets BEFORE the message is cut to :data:`MESSAGE_LIMIT`: a key straddling the
    cut would otherwise survive in part, no longer matching the string the caller masks."""
    body = getattr(err, "body", None)
    text = _message_from_body(body) if body is not None else ""
    if not text:
        response = getattr(err, "response", None)
        try:
            text = (response.text or "").strip() if response is not None else ""
        except Exception:  # a streamed or closed body cannot be read again: fall back to the exception text
            text = ""
    if not text:
        text = str(err)
        text = re.sub(r"^Error code: \d+\s*-?\s*", "", text)
    return redact(" ".join(text.split()))[:MESSAGE_LIMIT]


def _message_from_body(body: object) -> str:
    if isinstance(body, str):
        return body
    if not isinstance(body, dict):
        return json.dumps(body, default=str)
    inner = body.get("error", body)
    if isinstance(inner, dict):
        for key in ("message", "detail", "msg"):
            if inner.get(key):
                return _message_from_body(inner[key]) if not isinstance(inner[key], str) else inner[key]
    elif isinstance(inner, str) and inner:
        return inner
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI's validation errors: [{"loc": [...], "msg": "...", ...}]
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', d)}" for d in detail if isinstance(d, dict)
        ) or json.dumps(detail)
    return json.dumps(body, default=str)


def classify(err: BaseException, *, sent_format: bool = True, redact: Redact = _keep) -> ErrorInfo:
    """Classify ``err`` from the ``openai`` client; ``sent_format`` says whether a response_format was sent.

    ``redact`` masks secrets in the reason before it is truncated (see :func:`server_message`)."""
    if isinstance(err, openai.APITimeoutError):
        return ErrorInfo(Kind.TRANSIENT, None, "timed out waiting for the judge server")
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause else ""
        return ErrorInfo(
            Kind.CONNECTION, None, redact(f"could not connect to the judge server{detail}")[:MESSAGE_LIMIT]
        )
    if not isinstance(err, openai.APIStatusError):
        return ErrorInfo(Kind.TRANSIENT, None, redact(f"{type(err).__name__}: {err}")[:MESSAGE_LIMIT])
    status = err.status_code
    message = server_message(err, redact)
    reason = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if _QUOTA_WORDS.search(message):
        return ErrorInfo(Kind.QUOTA, status, reason)
    if status in _RETRY_STATUS:
        return ErrorInfo(Kind.TRANSIENT, status, reason)
    if sent_format and _FORMAT_WORDS.search(message):
        return ErrorInfo(Kind.FORMAT, status, reason)
    if status == 401:
        return ErrorInfo(Kind.AUTH, status, reason)
    if status == 403:
        return ErrorInfo(Kind.FORBIDDEN, status, reason)
    if status == 404 or (status < 500 and _MODEL_WORDS.search(message)):
        return ErrorInfo(Kind.MODEL, status, reason)
    if status >= 500:
        return ErrorInfo(Kind.TRANSIENT, status, reason)
    return ErrorInfo(Kind.BAD_REQUEST, status, reason)


class MessageBook:
    """Each distinct error reason of one judge, in full once: logged as a warning the first time and kept
    in :attr:`messages`; items carry only its first words and the reference (``[server message m1]``)."""

    def __init__(self, judge: str) -> None:
        self.judge = judge
        self.messages: dict[str, str] = {}  # reference -> the full reason
        self._refs: dict[str, str] = {}
        self._lock = threading.Lock()

    def cite(self, reason: str) -> str:
        """``reason`` itself when short, else its start and a reference to the full text."""
        if len(reason) <= SHORT:
            return reason
        with self._lock:
            ref = self._refs.get(reason)
            first = ref is None
            if ref is None:
                ref = self._refs[reason] = f"m{len(self._refs) + 1}"
                self.messages[ref] = reason
        if first:
            log.warning("judge %s: server message %s (items cite it by this reference): %s", self.judge, ref, reason)
        return f"{reason[:SHORT].rstrip()}... [server message {ref}: in full in the log and the run summary]"
