"""``exact`` judge: offline word matching for the demo task and tests - *not* an LLM.

Verdict yes when every word of the reference answer occurs as a word of the prediction, ignoring
case, punctuation and the articles a/an/the ("A dog." matches "the dog is running"; "man" does not
match "woman"; word order is free, so "red car" matches "the car is red").
Score 5 or 0. Its name is ``exact-match`` everywhere, so its numbers are never mistaken for an
LLM judge's.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from llamavid_eval.judges.base import Judge, Judgement, JudgeRequest

ARTICLES = frozenset({"a", "an", "the"})


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation removed (Unicode-aware)."""
    cleaned = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text.casefold())
    return cleaned.split()


class ExactMatchJudge(Judge):
    backend = "exact"

    def __init__(self, model: str = "exact-match") -> None:
        super().__init__("exact-match")

    @property
    def name(self) -> str:
        return "exact-match"

    def judge_many(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        out = []
        for req in requests:
            ref = [w for w in words(req.answer) if w not in ARTICLES]
            if not ref:
                out.append(Judgement.failure("reference answer has no words", backend=self.backend, model=self.model))
                continue
            have = set(words(req.prediction))
            ok = all(w in have for w in ref)
            out.append(Judgement(ok, 5 if ok else 0, "", self.backend, self.model, metadata={"matcher": "words"}))
        return out
