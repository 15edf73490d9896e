"""The judge contract shared by every backend, the tasks and the re-judge CLI.

A judge compares a model's prediction with a reference answer to a question and returns a
verdict (yes/no) plus an integer score 0-5 (the Video-ChatGPT protocol). A judgement that could
not be obtained is *recorded* as a failure (``failed=True``) - never dropped, never counted as "no".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class JudgeRequest:
    """One item to judge."""

    question: str
    answer: str
    prediction: str


@dataclass
class Judgement:
    """The outcome for one :class:`JudgeRequest`.

    ``verdict`` and ``score`` are ``None`` exactly when ``failed`` is true; ``error`` then says why.
    """

    verdict: bool | None
    score: int | None
    raw: str
    backend: str
    model: str
    failed: bool = False
    error: str | None = None
    cached: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def failure(cls, error: str, *, backend: str, model: str, raw: str = "", **metadata: Any) -> Judgement:
        """A failed judgement: no verdict, no score, and the reason - counted, never read as "no"."""
        return cls(None, None, raw, backend, model, failed=True, error=error, metadata=dict(metadata))


class Judge(ABC):
    """A judge backend. Subclasses implement :meth:`judge_many`; order of results = order of requests."""

    backend: str = "abstract"

    def __init__(self, model: str) -> None:
        self.model = model

    @abstractmethod
    def judge_many(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        """Judge every request; never raises for a single bad reply (that becomes a failed Judgement)."""

    def judge(self, request: JudgeRequest) -> Judgement:
        return self.judge_many([request])[0]

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.model}"

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release clients or models; a no-op unless a backend holds something."""

    def __repr__(self) -> str:  # never shows clients or keys, only what identifies the judge
        return f"{type(self).__name__}(name={self.name!r})"
