"""``openai`` and ``local`` judges: the OpenAI chat-completions protocol through the ``openai`` client.

``local`` is any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, SGLang) reached by base
URL + model name. Reliability lives here rather than in the client: the client's own retries are
off so that every retry is counted, backed off exponentially with jitter, and bounded.

Structured output: with ``response_format="auto"`` the judge first asks for a JSON schema (``local``
only; it constrains pred to yes/no and score to 0-5 on servers with guided decoding), then JSON mode,
then plain prompting. A level is dropped for the whole judge only after the *same* request succeeds
without it, so an unrelated 400 (e.g. a too-long prompt) never silently turns structured output off.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from llamavid_eval.judges.cache import JudgementCache
from llamavid_eval.judges.engine import ConversationJudge, Messages, Reply, Secrets
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

# Errors worth another try: the request may well succeed later.
log = logging.getLogger("judges")

_RETRYABLE = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
_RETRYABLE_STATUS = {408, 409, 429}
# Errors that say "this request's parameters are not accepted" - the cue to drop structured output.
_REJECTED = (openai.BadRequestError, openai.UnprocessableEntityError)


def safe_url(url: str | None) -> str | None:
    """``url`` without user:password, so a base URL can be logged and written to result files."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class OpenAICompatibleJudge(ConversationJudge):
    """A judge behind the chat-completions API. Use :class:`OpenAIJudge` or :class:`LocalJudge`."""

    backend = "local"
    auto_formats: tuple[str, ...] = ("json_schema", "json_object", "none")

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        concurrency: int = 8,
        response_format: str = "auto",
        cache: JudgementCache | None = None,
        parse_retries: int = 2,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        super().__init__(model, cache=cache, parse_retries=parse_retries)
        if response_format not in RESPONSE_FORMAT_CHOICES:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMAT_CHOICES)}; got {response_format!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout > 0")
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._formats = self.auto_formats if response_format == "auto" else (response_format,)
        self._level = 0  # index into _formats; only ever moves down
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)  # bound holds across concurrent judge_many calls
        self._secrets = Secrets(s for s in (api_key, urlsplit(base_url or "").password) if s and len(s) >= 6)
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={safe_url(self.base_url)!r})"

    @property
    def response_format(self) -> str:
        """The structured-output level currently in use."""
        return self._formats[self._level]

    def close(self) -> None:
        self._client.close()

    def _complete(self, conversations: Sequence[Messages]) -> list[Reply]:
        if len(conversations) == 1:
            return [self._complete_one(conversations[0])]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(self._complete_one, conversations))

    def _complete_one(self, messages: Messages) -> Reply:
        with self._slots:
            try:
                return self._ask_with_retries(messages)
            except Exception as err:  # a bug or an unexpected client error must not sink the batch
                return Reply(error=self.redact(f"{type(err).__name__}: {err}"))

    def _ask_with_retries(self, messages: Messages) -> Reply:
        retries = 0
        level = self._level
        while True:
            fmt = self._formats[level]
            try:
                text = self._ask(messages, fmt)
            except _REJECTED as err:
                if level + 1 < len(self._formats):
                    level += 1  # same request, less structure; committed only if it then succeeds
                    continue
                return Reply(error=self._describe(err), metadata={"transport_retries": retries})
            except (*_RETRYABLE, openai.APIStatusError) as err:
                status = getattr(err, "status_code", None)
                transient = not isinstance(err, openai.APIStatusError) or status in _RETRYABLE_STATUS or status >= 500
                if not transient:
                    return Reply(error=self._describe(err), metadata={"transport_retries": retries})
                if retries < self.max_retries:
                    self._sleep(retries, err)
                    retries += 1
                    continue
                return Reply(error=f"gave up after {retries + 1} tries: {self._describe(err)}",
                             metadata={"transport_retries": retries})
            if level > self._level:
                with self._lock:
                    self._level = max(self._level, level)
            return Reply(text=text, metadata={"transport_retries": retries, "response_format": fmt})

    def _ask(self, messages: Messages, fmt: str) -> str:
        extra: dict[str, Any] = {}
        if RESPONSE_FORMATS[fmt] is not None:
            extra["response_format"] = RESPONSE_FORMATS[fmt]
        resp = self._client.chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=TEMPERATURE,
            max_tokens=MAX_NEW_TOKENS,
            **extra,
        )
        if not resp.choices:
            return ""
        return resp.choices[0].message.content or ""

    def _sleep(self, retries: int, err: Exception) -> None:
        """Exponential backoff with jitter; a server's Retry-After wins when it asks for longer."""
        log.info("judge %s: retry %d/%d after %s", self.name, retries + 1, self.max_retries, self._describe(err)[:200])
        delay = min(self.backoff_max, self.backoff_base * 2**retries)
        delay = delay / 2 + random.uniform(0, delay / 2)
        response = getattr(err, "response", None)
        if response is not None:
            try:
                delay = max(delay, min(self.backoff_max, float(response.headers.get("retry-after", 0))))
            except (TypeError, ValueError):
                pass
        time.sleep(delay)

    def _describe(self, err: Exception) -> str:
        status = getattr(err, "status_code", None)
        head = f"HTTP {status}" if status else type(err).__name__
        return self.redact(f"{head}: {err}")[:500]


class OpenAIJudge(OpenAICompatibleJudge):
    """The OpenAI API itself (the paper's GPT-3.5-turbo judge). JSON schema is skipped: gpt-3.5 lacks it."""

    backend = "openai"
    auto_formats = ("json_object", "none")


class LocalJudge(OpenAICompatibleJudge):
    """An OpenAI-compatible server (vLLM, llama.cpp, Ollama, SGLang) - by base URL and model name."""

    backend = "local"
