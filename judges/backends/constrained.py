"""Constrained verdicts for the in-process judge: the model chooses, it never free-writes.

The reply's frame is forced. After the prompt the judge "has written" ``{"pred": "``; the model only
chooses between the continuations ``yes`` and ``no`` (their log-probabilities are compared), the
frame goes on with ``", "score": `` and the model chooses a digit 0-5 the same way, conditioned on
the chosen verdict. So a reply can never fail to parse, nothing is re-asked, and every judgement
carries the probability the model gave to ``yes`` (renormalised over yes/no) and its distribution
over the six scores: a judge that is 51/49 and one that is 99/1 are different judges.

Tokenisers split the frame in different ways (``"yes`` may be one token, ``yes`` two, a digit may
carry the space before it), so nothing here assumes token boundaries: the twelve full candidate
replies ``{"pred": "<yes|no>", "score": <0-5>`` are tokenised after the prompt, and the choices are
read off where their token lists part. A verdict that is several tokens is scored over all of them.

Cost per batch: one forward over the prompts and the frame's common start (the shared system-text
prefix comes from its KV cache), then one forward of the few frame tokens after the verdict, on the
same cache. Only when a verdict word is several tokens long are both verdicts continued (two rows
per item), to score their later tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import record_function
from transformers import DynamicCache

#: The reply frame; ``{"pred": "yes", "score": 4}`` is what the parser reads back (judges.prompt.parse_reply).
WORD = '{{"pred": "{verdict}'
CANDIDATE = WORD + '", "score": {score}'
VERDICTS = ("yes", "no")
SCORES = tuple(range(6))
#: Appended to the prompt version of constrained verdicts: the forced frame is text the model is
#: conditioned on, so cached free-text verdicts of the same model are never served as constrained ones.
VERSION_TAG = "+frame-v1"

Ids = tuple[int, ...]
PrefixKV = tuple[tuple[torch.Tensor, torch.Tensor], ...]


class ConstraintError(ValueError):
    """The tokeniser does not let the frame be scored (e.g. a score digit is not one token)."""


def canonical(verdict: bool, score: int) -> str:
    """The reply text a constrained judgement records."""
    return CANDIDATE.format(verdict="yes" if verdict else "no", score=score) + "}"


def separator(prompt: str) -> str:
    """A space after a prompt that does not end in whitespace (the plain ``ASSISTANT:`` rendering)."""
    return "" if not prompt or prompt[-1].isspace() else " "


@dataclass(frozen=True)
class Frame:
    """One prompt's constrained reply in token ids.

    ``prefix``: the prompt and the frame up to where the candidates part. Per verdict (yes, no):
    ``words`` spell it, ``then`` is the forced frame after it, ``scores`` the six score tokens.
    """

    prefix: list[int]
    words: tuple[Ids, Ids]
    then: tuple[Ids, Ids]
    scores: tuple[Ids, Ids]

    @property
    def tail(self) -> Ids:
        """Ids after ``prefix`` of the reply ``{"pred": "yes", "score": 0``."""
        return self.words[0] + self.then[0] + self.scores[0][:1]


@dataclass(frozen=True)
class Choice:
    verdict: bool
    score: int
    p_yes: float
    score_probs: tuple[float, ...]

    def metadata(self) -> dict[str, Any]:
        return {
            "decoding": "constrained",
            "p_yes": round(self.p_yes, 6),
            "score_probs": [round(p, 6) for p in self.score_probs],
            "p_score": round(self.score_probs[self.score], 6),
        }


def frames(tok: Any, rendered: Sequence[tuple[str, bool]]) -> list[Frame]:
    """A :class:`Frame` per ``(prompt text, add special tokens)``. The frame's split is worked out on the
    first prompt and reused by every prompt whose ids end the same way (all of them, unless the
    tokeniser merges across the end of the prompt); others get their own."""
    if not rendered:
        return []
    texts = [(text + separator(text), flag) for text, flag in rendered]
    full = encode(tok, [(text + CANDIDATE.format(verdict="yes", score=0), flag) for text, flag in texts])
    first = _frame(tok, *texts[0])
    out = []
    for ids, (text, flag) in zip(full, texts, strict=True):
        n = len(first.tail)
        if tuple(ids[-n:]) == first.tail and len(ids) > n:
            out.append(Frame(ids[:-n], first.words, first.then, first.scores))
        else:
            out.append(_frame(tok, text, flag))
    return out


def _frame(tok: Any, text: str, flag: bool) -> Frame:
    keys = [(v, s) for v in VERDICTS for s in SCORES]
    encoded = encode(tok, [(text + CANDIDATE.format(verdict=v, score=s), flag) for v, s in keys])
    cands = dict(zip(keys, encoded, strict=True))
    word_ids = dict(zip(VERDICTS, encode(tok, [(text + WORD.format(verdict=v), flag) for v in VERDICTS]), strict=True))
    common = _common(encoded)
    words, then, scores = [], [], []
    for verdict in VERDICTS:
        group = [cands[verdict, s] for s in SCORES]
        split = _common(group)
        own = [tuple(ids[split:]) for ids in group]
        if any(len(ids) != 1 for ids in own) or len(set(own)) != len(own):
            raise ConstraintError(
                f"the tokenizer does not spell each score 0-5 as one token after {verdict!r} ({own}); "
                "judge this model with free text: LLAMAVID_JUDGE_DECODING=free"
            )
        tail, word = tuple(group[0][common:split]), word_ids[verdict]
        if common < len(word) <= split and tuple(group[0][: len(word)]) == tuple(word):
            cut = len(word) - common  # the verdict word ends on a token boundary
        else:
            cut = len(tail)  # it merges with the frame after it: score the whole stretch
        if cut == 0:
            raise ConstraintError(f"'yes' and 'no' are not told apart by the tokenizer (after {text[-40:]!r})")
        words.append(tail[:cut])
        then.append(tail[cut:])
        scores.append(tuple(ids[0] for ids in own))
    return Frame(list(encoded[0][:common]), (words[0], words[1]), (then[0], then[1]), (scores[0], scores[1]))


def encode(tok: Any, texts: Sequence[tuple[str, bool]]) -> list[list[int]]:
    """Ids of every ``(text, add special tokens)``: one tokenizer call per value of the flag."""
    ids: list[list[int]] = [[] for _ in texts]
    for flag in (False, True):
        chosen = [i for i, (_, f) in enumerate(texts) if f == flag]
        if chosen:
            encoded = tok([texts[i][0] for i in chosen], add_special_tokens=flag)["input_ids"]
            for i, row in zip(chosen, encoded, strict=True):
                ids[i] = list(row)
    return ids


def _common(rows: Sequence[Sequence[int]]) -> int:
    length = 0
    while all(len(r) > length and r[length] == rows[0][length] for r in rows):
        length += 1
    return length


def choose(lm: Any, batch: Sequence[Frame], pad: int, shared: int, prefix: PrefixKV | None) -> list[Choice]:
    """The constrained verdicts of one batch; the first ``shared`` ids of every prefix are the ones
    ``prefix`` holds the keys/values of."""
    device = lm.device
    width = max(len(f.prefix) for f in batch)
    ids = torch.tensor([f.prefix[:shared] + [pad] * (width - len(f.prefix)) + f.prefix[shared:] for f in batch])
    mask = torch.tensor([[1] * shared + [0] * (width - len(f.prefix)) + [1] * (len(f.prefix) - shared) for f in batch])
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = len(batch)
    cache = (
        DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix]) if prefix else None
    )
    with torch.inference_mode(), record_function("judge.prefill"):
        out = lm(
            input_ids=ids[:, shared:],
            attention_mask=mask,
            position_ids=positions[:, shared:],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    with torch.inference_mode(), record_function("judge.extend"):
        first = out.logits[:, -1].float().log_softmax(-1)
        first_ids = torch.tensor([[f.words[0][0], f.words[1][0]] for f in batch], device=device)
        word_lp = first.gather(1, first_ids)  # [rows, 2]: log p of each verdict's first token
        several = any(len(w) > 1 for f in batch for w in f.words)
        if several:  # continue both verdicts, to score their later tokens
            pairs = [(i, v) for i in range(rows) for v in (0, 1)]
        else:
            pairs = list(enumerate((word_lp[:, 1] > word_lp[:, 0]).long().tolist()))
        lp_rows, score_logits = _extend(lm, out.cache, mask, positions, batch, pairs, pad)
        if several:
            word_lp = word_lp + lp_rows.view(rows, 2)
        chosen = (word_lp[:, 1] > word_lp[:, 0]).long()  # 0: yes (ties go to yes), 1: no
        rows_of = torch.arange(rows, device=device) * 2 + chosen if several else torch.arange(rows, device=device)
        score_probs = score_logits.index_select(0, rows_of).softmax(-1).cpu().tolist()
        margin = (word_lp[:, 0] - word_lp[:, 1]).cpu().tolist()  # log-odds of yes
    return [_choice(m, p) for m, p in zip(margin, score_probs, strict=True)]


def _extend(
    lm: Any, cache: Any, mask: torch.Tensor, positions: torch.Tensor, batch: Sequence[Frame], pairs: list, pad: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed each (item, verdict) row its verdict word and the frame after it. Returns per row the
    log-probability of the word's tokens after the first, and the logits of the six scores."""
    device = mask.device
    tails = [batch[i].words[v] + batch[i].then[v] for i, v in pairs]
    width = max(len(t) for t in tails)
    ids = torch.tensor([[pad] * (width - len(t)) + list(t) for t in tails], device=device)  # left padded:
    own = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)  # last ids aligned
    index = torch.tensor([i for i, _ in pairs], device=device)
    if not torch.equal(index, torch.arange(len(batch), device=device)):
        cache.reorder_cache(index)
    keep = width if any(len(batch[i].words[v]) > 1 for i, v in pairs) else 1
    logits = lm(
        input_ids=ids,
        attention_mask=torch.cat([mask.index_select(0, index), own], 1),
        position_ids=positions.index_select(0, index)[:, -1:] + own.cumsum(-1),
        cache=cache,
        use_cache=True,
        logits_to_keep=keep,
    ).logits
    rows_at, cols_at, targets, owner = [], [], [], []
    for r, (i, v) in enumerate(pairs):  # the word's token j is predicted at tail column j - 1
        word, start = batch[i].words[v], keep - len(tails[r])
        for j in range(1, len(word)):
            rows_at.append(r), cols_at.append(start + j - 1), targets.append(word[j]), owner.append(r)
    word_lp = torch.zeros(len(pairs), device=device)
    if rows_at:
        picked = logits[torch.tensor(rows_at, device=device), torch.tensor(cols_at, device=device)].float()
        lp = picked.log_softmax(-1).gather(1, torch.tensor(targets, device=device)[:, None])[:, 0]
        word_lp.index_add_(0, torch.tensor(owner, device=device), lp)
    score_ids = torch.tensor([batch[i].scores[v] for i, v in pairs], device=device)
    return word_lp, logits[:, -1].float().gather(1, score_ids)


def _choice(margin: float, probs: list[float]) -> Choice:
    """``margin``: log p(yes) - log p(no); ``probs``: the six scores' probabilities after the chosen verdict."""
    score = max(SCORES, key=lambda s: probs[s])
    p_yes = 1.0 / (1.0 + math.exp(-margin)) if margin > -700 else 0.0
    return Choice(margin >= 0, score, p_yes, tuple(probs))
