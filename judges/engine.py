"""What every LLM backend shares: the cache, the prompt, parsing and bounded re-asking.

A backend only has to turn a batch of chat conversations into replies (:meth:`ConversationJudge._complete`),
handing each to a callback as soon as it is there. This class then parses each reply; an unparseable one
is re-asked - with the bad reply and the reason appended, so that a deterministic judge sees new input -
at most ``parse_retries`` times. Every rejected reply is counted in the judgement's metadata, and an item
that never yields a valid reply becomes a *failed* judgement (the study's pipeline re-sampled until
something parsed and counted nothing). A verdict is written to the cache the moment it is known, not when
the batch ends: a run stopped by Ctrl-C, SIGTERM or a dead server keeps every verdict it received, and
the rerun asks only the rest (:mod:`llamavid_eval.judges.interrupt`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from llamavid_eval.judges.base import Judge, Judgement, JudgeRequest
from llamavid_eval.judges.cache import JudgementCache, cache_key
from llamavid_eval.judges.flow import Progress
from llamavid_eval.judges.interrupt import Interrupted
from llamavid_eval.judges.prompt import BUILTIN, ParseError, Prompt, parse_reply

log = logging.getLogger("judges")

Messages = list[dict[str, str]]
_KEEP_REJECTED = 300  # characters of each rejected reply kept in metadata, for debugging prompts


class Secrets(tuple):
    """Secrets a judge must mask in everything it returns; printing the holder never shows them."""

    def __repr__(self) -> str:
        return f"<{len(self)} secret(s) hidden>"

    __str__ = __repr__


@dataclass
class Reply:
    """One backend answer: ``text`` on success, ``error`` when no reply could be obtained."""

    text: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


OnReply = Callable[[int, Reply], None]
"""Called by a backend with (index of the conversation, its reply), once per conversation."""


class ConversationJudge(Judge):
    """Base for LLM judges (``openai``, ``local``, ``hf``)."""

    def __init__(
        self, model: str, *, cache: JudgementCache | None = None, parse_retries: int = 2, prompt: Prompt = BUILTIN
    ) -> None:
        super().__init__(model)
        self.prompt = prompt  # its version is in every cache key and record (judges.prompt)
        if parse_retries < 0:
            raise ValueError(f"parse_retries must be >= 0, got {parse_retries}")
        self.cache = cache
        self.parse_retries = parse_retries
        self._secrets = Secrets()
        self._held: list[tuple[str, Judgement]] | None = None  # cache writes of replies handed over together

    def _complete(self, conversations: Sequence[Messages], on_reply: OnReply) -> None:
        """Call ``on_reply(i, reply)`` once for every conversation, as soon as its reply is there, in the
        calling thread (the engine caches verdicts there). Must not raise for a single failing item."""
        raise NotImplementedError

    @contextmanager
    def replies_together(self) -> Iterator[None]:
        """For a backend that hands over many replies at the same instant (a batch chunk of the in-process
        judge): the verdicts known inside the block go to the cache in one transaction when it ends (also when
        it ends by Ctrl-C), not in one transaction each (~1 ms apiece, a third of a 256-item chunk's time)."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held and self.cache is not None:
                self.cache.put_many(held)

    @property
    def label(self) -> str:
        """The model name verdicts and cache keys carry (a server backend may learn the one it really serves)."""
        return self.model

    @property
    def name(self) -> str:
        """``backend:label``, and ``#prompt=<version>`` under a prompt file: other wording, another judge."""
        name = f"{self.backend}:{self.label}"
        return name if self.prompt.builtin else f"{name}#prompt={self.prompt.version}"

    def redact(self, text: str) -> str:
        """``text`` with every secret this judge holds (API keys) masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def judge_many(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        requests = list(requests)
        keys = [cache_key(self.backend, self.label, r, self.prompt.version) for r in requests]
        found = self.cache.get_many(keys) if self.cache is not None and keys else {}
        # Identical items (same key) are asked once and share the outcome.
        todo: dict[str, JudgeRequest] = {}
        for key, req in zip(keys, requests, strict=True):
            if key not in found:
                todo.setdefault(key, req)
        fresh: dict[str, Judgement] = {}
        progress = Progress(self.name, len(found) + len(todo), len(found))
        try:
            self._judge_uncached(todo, lambda key, j: self._keep(key, j, todo[key], fresh, progress))
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM through judges.interrupt: say what is kept
            stopped = err if isinstance(err, Interrupted) else Interrupted()
            stopped.judge, stopped.cache_off = self.name, self.cache is None
            stopped.cached = len(found) + sum(not j.failed for j in fresh.values()) if self.cache is not None else 0
            stopped.left = len(found) + len(todo) - stopped.cached
            raise stopped from None
        finally:
            progress.close()
        failures = sum(1 for j in fresh.values() if j.failed)
        if failures:
            log.warning("judge %s: %d of %d new judgements failed", self.name, failures, len(fresh))
        out = []
        for key in keys:
            j = found.get(key) or fresh[key]
            out.append(Judgement(**j.to_dict()))  # independent copies: duplicates must not share metadata
        return out

    def _keep(
        self, key: str, judgement: Judgement, request: JudgeRequest, fresh: dict[str, Judgement], progress: Progress
    ) -> None:
        """A final outcome: cached at once (under the label known now), then counted."""
        if self.cache is not None and not judgement.failed:
            entry = (cache_key(self.backend, self.label, request, self.prompt.version), judgement)
            if self._held is not None:
                self._held.append(entry)
            else:
                self.cache.put_many([entry])
        fresh[key] = judgement
        progress.update(judgement.failed)

    def _judge_uncached(self, todo: dict[str, JudgeRequest], keep: Callable[[str, Judgement], None]) -> None:
        """Ask, parse and re-ask every item of ``todo``; ``keep(key, judgement)`` receives each final outcome."""
        convs: dict[str, Messages] = {k: self.prompt.messages(r) for k, r in todo.items()}
        meta: dict[str, dict[str, Any]] = {
            k: {
                "attempts": 0,
                "parse_failures": 0,
                "parse_errors": [],
                "rejected_replies": [],
                "prompt_version": self.prompt.version,
            }
            for k in todo
        }
        last_raw: dict[str, str] = {}
        pending = list(todo)
        for _ in range(self.parse_retries + 1):
            if not pending:
                break
            asked, retry = pending, []

            def on_reply(index: int, reply: Reply, asked: list[str] = asked, retry: list[str] = retry) -> None:
                key = asked[index]
                m = meta[key]
                m["attempts"] += 1
                _merge(m, reply.metadata)
                if reply.error is not None:
                    keep(key, self._failure(f"no reply: {reply.error}", m, raw=last_raw.get(key, "")))
                    return
                text = self.redact(reply.text or "")
                try:
                    parsed = parse_reply(text)
                except ParseError as err:
                    m["parse_failures"] += 1
                    m["parse_errors"].append(err.reason)
                    m["rejected_replies"].append(text[:_KEEP_REJECTED])
                    last_raw[key] = text
                    convs[key] = self.prompt.reask_messages(convs[key], text, err.reason)
                    retry.append(key)
                    return
                keep(key, Judgement(parsed.verdict, parsed.score, text, self.backend, self.label, metadata=m))

            self._complete([convs[k] for k in asked], on_reply)
            pending = retry
        for key in pending:
            m = meta[key]
            error = f"unparseable reply after {m['attempts']} attempt(s): {m['parse_errors'][-1]}"
            keep(key, self._failure(error, m, raw=last_raw.get(key, "")))

    def _failure(self, error: str, metadata: dict[str, Any], raw: str = "") -> Judgement:
        return Judgement.failure(self.redact(error), backend=self.backend, model=self.label, raw=raw, **metadata)


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """Accumulate per-attempt counters (``transport_retries`` ...) and keep the latest other values."""
    for k, v in extra.items():
        if isinstance(v, int) and not isinstance(v, bool) and isinstance(into.get(k), int):
            into[k] += v
        else:
            into[k] = v
