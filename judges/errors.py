"""What a failed request to a judge server *means*: the server's own reason, and what to do about it.

Status codes alone mislead: llama-cpp-python answers a rejected ``response_format`` with HTTP 500
(a format problem, not a crash), FastAPI servers answer a wrong model name with 400 and put the
reason in ``{"detail": ...}``, which the ``openai`` client leaves out of its exception text. So an
error is classified by status *and* by the words of the server's message, and that message is kept -
once per run (:class:`MessageBook`): a 500 with a traceback repeated in the metadata of every item
buries the one line that matters.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import openai

MESSAGE_LIMIT = 400  # characters of a server's message kept in a recorded failure
SHORT = 160  # characters of a reason an item carries; a longer one is cited by reference
log = logging.getLogger("judges")


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
