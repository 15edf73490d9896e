"""``openai`` and ``local`` judges: the OpenAI chat-completions protocol through the ``openai`` client.

``local`` is any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, SGLang) reached by base
URL + model name. Reliability lives here rather than in the client: the client's own retries are
off so that every retry is counted, backed off exponentially with jitter, and bounded. Errors are
classified by meaning (:mod:`llamavid_eval.judges.flow`): a rejected response format falls back
whatever the status, a wrong model or key fails at once, only transient errors are retried; the
server's own message is kept: in full once per run (logged, and in :attr:`OpenAICompatibleJudge.server_messages`),
and per failed item its first words and a reference. Requests in flight start at a few and grow up to
``concurrency`` while the server keeps pace (:mod:`llamavid_eval.judges.flow`), halve on 429/5xx, and a
batch stops sending to a judge that is plainly down (circuit breaker).

Structured output: with ``response_format="auto"`` the judge first asks for a JSON schema (``local``
only; it constrains pred to yes/no and score to 0-5 on servers with guided decoding), then JSON mode,
then plain prompting. A level is dropped for the whole judge only after the *same* request succeeds
without it, so an unrelated 400 (e.g. a too-long prompt) never silently turns structured output off.
Each judgement records the format sent and the one honoured (structured output that does not come
back as a JSON object was ignored by the server, as ``transformers serve`` does - unless the reply was
cut at the token limit, which is recorded as ``truncated``).

The model: a server may answer under another name than the one asked for (llama.cpp ignores the
name; OpenAI answers with a dated snapshot). The name it reports is what verdicts, cache keys and the
judge's name carry (:attr:`OpenAICompatibleJudge.label`), with a warning once when it differs: a typo in
the model name must not label every verdict.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

import openai

from llamavid_eval.judges.base import Judgement, JudgeRequest
from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.engine import ConversationJudge, Messages, OnReply, Reply, Secrets
from llamavid_eval.judges.flow import AdaptiveLimit, CircuitBreaker, ErrorInfo, Kind, MessageBook, classify, run_each
from llamavid_eval.judges.prompt import MAX_NEW_TOKENS, TEMPERATURE

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "pred": {"type": "string", "enum": ["yes", "no"]},
                "score": {"type": "integer", "minimum": 0, "maximum": 5},
            },
            "required": ["pred", "score"],
            "additionalProperties": False,
        },
    },
}
RESPONSE_FORMATS: dict[str, dict[str, Any] | None] = {
    "json_schema": VERDICT_SCHEMA,
    "json_object": {"type": "json_object"},
    "none": None,
}
RESPONSE_FORMAT_CHOICES = ("auto", *RESPONSE_FORMATS)
PREFLIGHT_HEADER = "X-Llamavid-Judge-Preflight"  # marks the preflight's probe, so a test server can tell it apart

log = logging.getLogger("judges")


class Completion(NamedTuple):
    """One reply as the server gave it: the text, why it ended (``length``: cut at the token limit) and
    the model the server says answered."""

    text: str
    finish_reason: str | None = None
    model: str | None = None


def url_secrets(url: str | None) -> list[str]:
    """Every form in which the credentials of ``url`` can come back in a server's message: the password as
    written and decoded, the ``Authorization: Basic`` value made from user and password, query values."""
    parts = urlsplit(url or "")
    found = [pair.split("=", 1)[1] for pair in parts.query.split("&") if "=" in pair]
    if parts.password:
        user, password = unquote(parts.username or ""), unquote(parts.password)
        found += [parts.password, password, base64.b64encode(f"{user}:{password}".encode()).decode()]
    return found + [unquote(value) for value in found]


def safe_url(url: str | None) -> str | None:
    """``url`` without user:password and with query values masked (``?api_key=...`` is a credential on
    some gateways), so a base URL can be logged and written to result files."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    if parts.query:
        parts = parts._replace(query="&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&")))
    return urlunsplit(parts)


class OpenAICompatibleJudge(ConversationJudge):
    """A judge behind the chat-completions API. Use :class:`OpenAIJudge` or :class:`LocalJudge`."""

    backend = "local"
    auto_formats: tuple[str, ...] = ("json_schema", "json_object", "none")
    default_concurrency = 64

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        concurrency: int | None = None,
        response_format: str = "auto",
        cache: JudgementCache | None = None,
        parse_retries: int = 2,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        breaker_threshold: int = 10,
        max_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        super().__init__(model, cache=cache, parse_retries=parse_retries)
        if response_format not in RESPONSE_FORMAT_CHOICES:
            raise ValueError(
                f"response_format must be one of {', '.join(RESPONSE_FORMAT_CHOICES)}; got {response_format!r}"
            )
        concurrency = self.default_concurrency if concurrency is None else concurrency
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout > 0")
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_tokens = max_tokens
        self.served_model: str | None = None  # the name the server answers under, once known
        self.messages = MessageBook(f"{self.backend}:{model}")
        self._formats = self.auto_formats if response_format == "auto" else (response_format,)
        self._level = 0  # index into _formats; only ever moves down
        self.format_note: str | None = None
        self._lock = threading.Lock()
        self.limit = AdaptiveLimit(concurrency)  # shared: the bound holds across concurrent judge_many calls
        self.breaker = CircuitBreaker(breaker_threshold)
        self._secrets = Secrets(s for s in (api_key, *url_secrets(base_url)) if s and len(s) >= 6)
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={safe_url(self.base_url)!r})"

    @property
    def label(self) -> str:
        return self.served_model or self.model

    @property
    def server_messages(self) -> dict[str, str]:
        """Each distinct server error of this judge in full, by the reference its failed items carry."""
        return self.messages.messages

    def note_served(self, served: str | None) -> None:
        """Record the model name the server answered under; warn once when it is not the one asked for."""
        if not served or served == self.model or served == self.served_model:
            return
        with self._lock:
            if self.served_model == served:
                return
            self.served_model = served
        # a dated snapshot of the name asked for (gpt-4.1-mini -> gpt-4.1-mini-2025-04-14) is expected
        level = logging.INFO if served.startswith(self.model) else logging.WARNING
        log.log(
            level,
            "judge %s:%s: the server answers as model %r; verdicts and cache entries are labelled %r "
            "(is the model name right? the server may ignore it)",
            self.backend,
            self.model,
            served,
            served,
        )

    @property
    def response_format(self) -> str:
        """The structured-output level currently in use."""
        return self._formats[self._level]

    @property
    def formats_to_try(self) -> tuple[str, ...]:
        """The response formats still on the fallback ladder, strongest first."""
        return self._formats[self._level :]

    def use_format(self, fmt: str, note: str | None = None) -> None:
        """Start at ``fmt`` (found by the preflight) so the real run never pays for the fallback; the weaker
        formats below it stay available should the server change its mind."""
        if fmt not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}; got {fmt!r}")
        ladder = self.auto_formats[self.auto_formats.index(fmt) :] if fmt in self.auto_formats else (fmt,)
        with self._lock:
            self._formats, self._level, self.format_note = ladder, 0, note

    def close(self) -> None:
        self._client.close()

    def judge_many(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        self.breaker.reset()  # the breaker is per batch: a rerun after a restart starts sending again
        return super().judge_many(requests)

    def served_models(self, timeout: float) -> list[str]:
        """The model ids of ``GET /models``, asked once without retries (raises ``openai.APIError``)."""
        page = self._client.with_options(timeout=timeout, max_retries=0).models.list()
        data = getattr(page, "data", None)
        if not isinstance(data, list):
            raise ValueError("GET /models answered without a list of models")
        return [m.id for m in data if isinstance(getattr(m, "id", None), str)]

    def probe(self, messages: Messages, fmt: str, timeout: float) -> Completion:
        """One request without retries or fallback - the preflight's tool (raises ``openai.APIError``)."""
        client = self._client.with_options(timeout=timeout, max_retries=0, default_headers={PREFLIGHT_HEADER: "1"})
        return self._ask(messages, fmt, client=client)

    def _complete(self, conversations: Sequence[Messages], on_reply: OnReply) -> None:
        stop = threading.Event()  # set when the caller is interrupted: nothing more is sent
        tasks = [partial(self._complete_one, messages, stop) for messages in conversations]
        run_each(tasks, self.concurrency, on_reply, stop)

    def _complete_one(self, messages: Messages, stop: threading.Event) -> Reply:
        try:
            return self._ask_with_retries(messages, stop)
        except Exception as err:  # a bug or an unexpected client error must not sink the batch
            return Reply(error=self.redact(f"{type(err).__name__}: {err}"))

    def _ask_with_retries(self, messages: Messages, stop: threading.Event) -> Reply:
        retries = 0
        level = self._level
        while True:
            if stop.is_set():
                return Reply(error="not sent: judging was interrupted", metadata={"error_kind": "interrupted"})
            if self.breaker.reason is not None:
                return Reply(
                    error=f"not sent: {self.breaker.reason}",
                    metadata={"transport_retries": retries, "error_kind": "breaker"},
                )
            fmt = self._formats[level]
            reply, info, err = self._send(messages, fmt)
            if info is None:
                break
            reason = self.messages.cite(self.redact(info.reason))
            meta = {"transport_retries": retries, "error_kind": info.kind.value}
            if info.kind in (Kind.FORMAT, Kind.BAD_REQUEST):
                if level + 1 < len(self._formats):
                    level += 1  # same request, less structure; committed only if it then succeeds
                    continue
                return Reply(error=reason, metadata=meta)
            if info.kind is Kind.CONNECTION or info.kind.permanent:
                self.breaker.failed(info.kind.value, reason, self.name)
            if info.kind.permanent:
                return Reply(error=reason, metadata=meta)
            if retries < self.max_retries and self.breaker.reason is None:
                self._sleep(retries, err, reason)
                retries += 1
                continue
            # an item that exhausted its retries on timeouts/429/5xx counts towards the breaker too:
            # a hung or persistently failing server must stop the batch, not cost every item its retries
            self.breaker.failed(info.kind.value, reason, self.name)
            return Reply(error=f"gave up after {retries + 1} tries: {reason}", metadata=meta)
        self.breaker.succeeded()
        if level > self._level:
            with self._lock:
                if len(self._formats) > level:
                    self._level = max(self._level, level)
        assert reply is not None
        self.note_served(reply.model)
        return Reply(text=reply.text, metadata=self._format_metadata(fmt, reply, retries))

    def _send(self, messages: Messages, fmt: str) -> tuple[Completion | None, ErrorInfo | None, Exception | None]:
        """One attempt inside a concurrency slot; feeds the adaptive limit (overload, and how long a reply took)."""
        with self.limit.slot() as started:
            try:
                reply = self._ask(messages, fmt)
            except openai.APIError as err:
                info = classify(err, sent_format=RESPONSE_FORMATS[fmt] is not None, redact=self.redact)
                if info.kind is Kind.TRANSIENT:  # 429, 5xx or a timeout: the server has more than it can take
                    self.limit.overloaded(started)
                return None, info, err
        self.limit.succeeded(time.monotonic() - started)
        return reply, None, None

    def _format_metadata(self, fmt: str, reply: Completion, retries: int) -> dict[str, Any]:
        """What was sent and what the server honoured: structured output comes back as a JSON object, or
        as the start of one when the reply was cut at the token limit (truncated, not ignored)."""
        truncated = reply.finish_reason == "length"
        text = reply.text.strip()
        honoured = fmt if fmt == "none" or is_json_object(text) or (truncated and text.startswith("{")) else "none"
        meta: dict[str, Any] = {"transport_retries": retries, "response_format": honoured, "response_format_sent": fmt}
        if truncated:
            meta["truncated"] = True  # cut at max_tokens: a parse failure is then no sign of an ignored format
        if self.served_model:
            meta["requested_model"] = self.model
        if self.format_note:
            meta["response_format_note"] = self.format_note
        return meta

    def _ask(self, messages: Messages, fmt: str, client: openai.OpenAI | None = None) -> Completion:
        extra: dict[str, Any] = {}
        if RESPONSE_FORMATS[fmt] is not None:
            extra["response_format"] = RESPONSE_FORMATS[fmt]
        resp = (client or self._client).chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=TEMPERATURE,
            max_tokens=self.max_tokens,
            **extra,
        )
        served = resp.model if isinstance(getattr(resp, "model", None), str) else None
        if not resp.choices:
            return Completion("", None, served)
        choice = resp.choices[0]
        return Completion(choice.message.content or "", choice.finish_reason, served)

    def _sleep(self, retries: int, err: Exception | None, reason: str) -> None:
        """Exponential backoff with jitter; a server's Retry-After wins; a tripped breaker cuts it short."""
        log.info("judge %s: retry %d/%d after %s", self.name, retries + 1, self.max_retries, reason[:200])
        delay = min(self.backoff_max, self.backoff_base * 2**retries)
        delay = delay / 2 + random.uniform(0, delay / 2)
        response = getattr(err, "response", None)
        if response is not None:
            try:
                delay = max(delay, min(self.backoff_max, float(response.headers.get("retry-after", 0))))
            except (TypeError, ValueError):
                pass
        self.breaker.stopped.wait(delay)


def is_json_object(text: str) -> bool:
    """Whether ``text`` is exactly one JSON object - what a server honouring structured output returns."""
    try:
        return isinstance(json.loads(text.strip()), dict)
    except ValueError:
        return False


class OpenAIJudge(OpenAICompatibleJudge):
    """The OpenAI API itself (the paper's GPT-3.5-turbo judge). JSON schema is skipped: gpt-3.5 lacks it."""

    backend = "openai"
    auto_formats = ("json_object", "none")
    default_concurrency = 8  # the API's rate limits depend on the account tier; the adaptive limit copes with 429s


class LocalJudge(OpenAICompatibleJudge):
    """An OpenAI-compatible server (vLLM, llama.cpp, Ollama, SGLang) - by base URL and model name."""

    backend = "local"
