"""Read a judge's reply into ``(verdict, score)`` - or reject it with a reason.

Real judges wrap the requested ``{'pred': 'yes', 'score': 4}`` in many ways: JSON instead of a
Python dict, Markdown code fences, prose before and after, ``"Yes"``/``YES``, the score as a string
or a float. All of those are accepted. Anything else is rejected *explicitly* (:class:`ParseError`
with a reason) so that the caller can count it and re-ask; a bad reply is never read as "no".

Decisions:
- A score must be a whole number in 0-5. ``4.0`` and ``"4"`` are read as 4; ``3.5`` is rejected,
  not rounded: the prompt asks for an integer, a half point means the judge ignored the format,
  and rounding would silently pick a direction (Python rounds 2.5 down and 3.5 up) and bias
  ``mean_score``. A re-ask is cheap and the failure is counted.
- Booleans are not scores (``True`` is an ``int`` in Python) and ``pred`` must be the string
  yes/no (any case, surrounding spaces or a trailing full stop allowed).
- Several dictionaries in one reply are fine if they agree (a judge repeating itself); if they
  disagree the reply is ambiguous and rejected.
- A reply in which the judge wrote code gives no verdict, wherever its dictionary stands: a line
  (inside Markdown fences or not) that defines a function or class, returns, imports, prints, or
  assigns a dictionary to a name. Small instruct models asked for a dictionary often write a
  program that builds one, echoing the prompt's example (``def f(): return {'pred': 'yes',
  'score': 4}``); that dictionary, or one quoted in the prose explaining the code, is an example,
  not a judgement. A dictionary alone in a fenced block (```` ```json {...} ``` ````) or in prose is
  still a verdict.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any

SCORE_MIN, SCORE_MAX = 0, 5
SCORE_RANGE = (float(SCORE_MIN), float(SCORE_MAX))
_MAX_SCAN = 20_000  # characters; a verdict is short, a runaway reply is not worth scanning in full
_MAX_STARTS = 64  # unmatched "{" tried; bounds the work on garbage to O(_MAX_STARTS * _MAX_SCAN)
# A line of code (see the module docstring): Python or JavaScript, the languages judges write in.
_CODE_LINE = re.compile(
    r"^[ \t>]*(?:(?:async[ \t]+)?def[ \t]+\w+[ \t]*\(|class[ \t]+\w+[ \t]*[(:]|function[ \t]+\w+[ \t]*\("
    r"|return\b|import[ \t]+\w|from[ \t]+[\w.]+[ \t]+import\b|print[ \t]*\("
    r"|(?:(?:const|let|var)[ \t]+)?[A-Za-z_][\w.]*(?:\[[^\]\n]*\])?[ \t]*=[ \t]*(?:\{|dict[ \t]*\())",
    re.MULTILINE,
)


class ParseError(ValueError):
    """A reply that does not contain a valid verdict; ``reason`` says why (it ends up in metadata)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParsedReply:
    verdict: bool
    score: int


def parse_reply(text: Any) -> ParsedReply:
    """Return the verdict in ``text`` or raise :class:`ParseError`."""
    if not isinstance(text, str):
        raise ParseError(f"reply is not text ({type(text).__name__})")
    if not text.strip():
        raise ParseError("empty reply")
    code = _CODE_LINE.search(text[:_MAX_SCAN])
    if code:
        raise ParseError(f"the reply holds code ({_short(code.group(0).strip())}): a dictionary there is an example")
    dicts = [d for d in (_load(seg) for seg in _brace_segments(text[:_MAX_SCAN])) if d is not None]
    if not dicts:
        raise ParseError("no dictionary found in the reply")
    candidates = [d for d in dicts if "pred" in d or "score" in d]
    if not candidates:
        raise ParseError("no dictionary with 'pred' and 'score' keys")
    results: list[ParsedReply] = []
    reasons: list[str] = []
    for cand in candidates:
        try:
            results.append(_validate(cand))
        except ParseError as err:
            reasons.append(err.reason)
    if not results:
        raise ParseError(reasons[0])
    if any(r != results[0] for r in results[1:]):
        raise ParseError("several dictionaries with different verdicts")
    return results[0]


def _validate(d: dict[str, Any]) -> ParsedReply:
    for key in ("pred", "score"):
        if key not in d:
            raise ParseError(f"missing key '{key}'")
    return ParsedReply(verdict=_read_pred(d["pred"]), score=_read_score(d["score"]))


def _read_pred(value: Any) -> bool:
    if isinstance(value, str):
        word = value.strip().rstrip(".!").strip().lower()
        if word in ("yes", "no"):
            return word == "yes"
    raise ParseError(f"pred must be 'yes' or 'no', got {_short(value)}")


def _read_score(value: Any) -> int:
    number: float | int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or (isinstance(number, float) and not math.isfinite(number)):
        raise ParseError(f"score must be a number, got {_short(value)}")
    if isinstance(number, float):
        if not number.is_integer():
            raise ParseError(f"score must be a whole number, got {_short(value)}")
        number = int(number)
    if not SCORE_MIN <= number <= SCORE_MAX:
        raise ParseError(f"score out of range {SCORE_MIN}-{SCORE_MAX}, got {_short(value)}")
    return number


def _load(segment: str) -> dict[str, Any] | None:
    """A ``{...}`` segment as a dict with normalised keys, trying JSON then a Python literal."""
    for loader in (json.loads, ast.literal_eval):
        try:
            value = loader(segment)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return {str(k).strip().lower(): v for k, v in value.items()}
    return None


def _brace_segments(text: str) -> list[str]:
    """Outermost balanced ``{...}`` spans, ignoring braces inside quoted strings."""
    segments: list[str] = []
    pos = 0
    tries = 0
    while (start := text.find("{", pos)) != -1 and tries < _MAX_STARTS:
        tries += 1
        end = _matching_brace(text, start)
        if end is None:
            pos = start + 1
            continue
        segments.append(text[start : end + 1])
        pos = end + 1
    return segments


def _matching_brace(text: str, start: int) -> int | None:
    depth = 0
    quote: str | None = None
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
