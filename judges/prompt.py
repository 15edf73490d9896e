"""The judge prompt - the built-in wording every backend sends, or a user's prompt file - and how a reply is read.

One definition per judge means verdicts from ``openai``, ``local`` and ``hf`` differ only by the
judge model, never by wording. The wording still moves verdicts, and ours is not the paper's, so the
prompt is configuration: a prompt file (YAML or JSON; keys ``system``, ``user`` and optionally
``reask``) replaces it, given by ``LLAMAVID_JUDGE_PROMPT`` / ``--judge-prompt`` or, in a swap spec,
``#prompt=FILE``. A prompt's :attr:`Prompt.version` is part of the cache key and of every record: the
built-in one is ``vcgpt-qa-v1`` (change it whenever its text changes), a file's is a hash of its
content, so a verdict is never reused under other wording. :data:`SHIPPED` prompts are chosen by
name (``instructions-first``: our wording with every fixed text before the item, which an in-process
judge then computes once per run instead of once per item).

Reading a reply (second half of this file): real judges wrap the requested ``{'pred': 'yes', 'score':
4}`` in many ways: JSON instead of a Python dict, Markdown code fences, prose before and after,
``"Yes"``/``YES``, the score as a string or a float. All of those are accepted. Anything else is
rejected *explicitly* (:class:`ParseError` with a reason) so that the caller can count it and re-ask;
a bad reply is never read as "no". Decisions:

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
import hashlib
import json
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamavid_eval.judges.base import JudgeRequest

PROMPT_VERSION = "vcgpt-qa-v1"

#: Sampling is off everywhere: the study's Llama-3 judge sampled (0.6 / top-p 0.9) and could not be
#: reproduced. Backends pass this as ``temperature`` (API) or use greedy decoding (transformers).
TEMPERATURE = 0.0

#: Enough for ``{'pred': 'yes', 'score': 4}`` plus a little slack for chatty judges.
MAX_NEW_TOKENS = 64

SYSTEM_PROMPT = (
    "You judge answers to questions about videos. For each question-answer pair you receive the "
    "question, the correct answer and a predicted answer written by a model. Decide whether the "
    "predicted answer is correct.\n"
    "Criteria:\n"
    "- Judge meaning, not wording: synonyms, paraphrases and extra words that do not change the "
    "meaning count as a match.\n"
    "- The prediction is wrong when it contradicts the correct answer, names a different thing, "
    "action, number or attribute, or does not answer the question.\n"
    "- A prediction that hedges between several answers is wrong unless all of them fit.\n"
    "Then rate how well the prediction matches the correct answer with an integer score from 0 "
    "(no match at all) to 5 (perfect match)."
)

ITEM_TEMPLATE = (
    "Judge this question-answer pair about a video.\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {prediction}"
)

REPLY_INSTRUCTIONS = (
    "Reply with only a Python dictionary string (valid JSON is accepted too) with two keys: "
    "'pred', which is 'yes' if the predicted answer is correct and 'no' otherwise, and 'score', an "
    "integer from 0 to 5. For example: {{'pred': 'yes', 'score': 4}}. Do not write anything else."
)

USER_TEMPLATE = ITEM_TEMPLATE + "\n" + REPLY_INSTRUCTIONS

#: Sent after a reply that could not be parsed, so that even a deterministic judge sees new input.
REASK_TEMPLATE = (
    "Your reply could not be read ({reason}). Reply again with only the dictionary, for example "
    "{{'pred': 'no', 'score': 1}}."
)

# part of a prompt file -> the placeholders it must hold, the placeholders it may hold
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "system": (frozenset(), frozenset()),
    "user": (frozenset({"question", "answer", "prediction"}), frozenset({"question", "answer", "prediction"})),
    "reask": (frozenset(), frozenset({"reason"})),
}
_REQUIRED = ("system", "user")


class PromptError(ValueError):
    """A prompt file that cannot be used; the message names the file, the part and the fix."""


@dataclass(frozen=True)
class Prompt:
    """The three texts a judge sends and the version recorded with every verdict they produce."""

    system: str
    user: str
    reask: str
    version: str
    source: str | None = None  # the file (or shipped name) it came from; None for the built-in prompt

    @property
    def builtin(self) -> bool:
        return self.source is None

    def messages(self, request: JudgeRequest) -> list[dict[str, str]]:
        """Chat messages (OpenAI format) for one item."""
        user = self.user.format(
            question=request.question.strip(), answer=request.answer.strip(), prediction=request.prediction.strip()
        )
        system = self.system.format()  # a template without placeholders: {{ and }} (as the file check asks) send { }
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def reask_messages(self, messages: list[dict[str, str]], reply: str, reason: str) -> list[dict[str, str]]:
        """The conversation extended by the unparseable reply and a request to answer in the format."""
        return [
            *messages,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": self.reask.format(reason=reason)},
        ]

    def describe(self) -> str:
        return self.version if self.builtin else f"{self.version} (from {self.source})"


BUILTIN = Prompt(SYSTEM_PROMPT, USER_TEMPLATE, REASK_TEMPLATE, PROMPT_VERSION)


def content_version(system: str, user: str, reask: str) -> str:
    """``prompt-<12 hex>``: a hash of the texts themselves, so comments, key order, YAML or JSON do not
    change it and any change of wording does."""
    payload = json.dumps([system, user, reask], ensure_ascii=False)
    return "prompt-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def _instructions_first() -> Prompt:
    """The built-in wording with the reply instructions moved from after the item to the end of the
    system text: everything that is the same in every prompt comes before the item, so an in-process
    judge computes it once per run (shared prefix) instead of once per item. Other order, other
    verdicts possible: its version is the hash of its texts, as a prompt file's would be."""
    system = SYSTEM_PROMPT + "\n" + REPLY_INSTRUCTIONS
    version = content_version(system, ITEM_TEMPLATE, REASK_TEMPLATE)
    return Prompt(system, ITEM_TEMPLATE, REASK_TEMPLATE, version, "instructions-first")


#: Prompts we ship besides the built-in one, by the name that selects them (``--judge-prompt
#: instructions-first``). A name is looked up only when no file of that name exists, so a user's own
#: file always wins.
SHIPPED = {"instructions-first": _instructions_first()}


def load_prompt(path: str | Path | None) -> Prompt:
    """The prompt in file ``path`` (YAML or JSON) or of a :data:`SHIPPED` name, or :data:`BUILTIN` for
    None / ""; :class:`PromptError` names what is wrong (unreadable file, unknown key, missing or unknown
    placeholder)."""
    if path is None or str(path).strip() == "":
        return BUILTIN
    file = Path(path).expanduser()
    if not file.exists() and str(path) in SHIPPED:
        return SHIPPED[str(path)]
    data = _read(file)
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise PromptError(f"judge prompt {file}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(_FIELDS)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise PromptError(f"judge prompt {file}: missing key(s) {', '.join(missing)}; it needs {', '.join(_REQUIRED)}")
    texts = {k: data.get(k, REASK_TEMPLATE if k == "reask" else None) for k in _FIELDS}
    for part, text in texts.items():
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"judge prompt {file}: {part!r} must be a non-empty text, got {text!r}")
        _check_placeholders(file, part, text)
    system, user, reask = texts["system"], texts["user"], texts["reask"]
    return Prompt(system, user, reask, content_version(system, user, reask), str(file))


def _read(file: Path) -> dict[str, Any]:
    import yaml  # JSON is YAML too: one reader for both

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        shipped = ", ".join(SHIPPED)
        raise PromptError(
            f"judge prompt {file}: cannot read it ({err.strerror or err}); check the path, or name a shipped "
            f"prompt ({shipped})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PromptError(f"judge prompt {file}: not valid YAML or JSON: {err}") from None
    if not isinstance(data, dict):
        raise PromptError(f"judge prompt {file}: must be a mapping with keys {', '.join(_FIELDS)}")
    return data


def _check_placeholders(file: Path, part: str, text: str) -> None:
    required, allowed = _FIELDS[part]
    try:
        found = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as err:  # a lone "{" or "}"
        raise PromptError(
            f"judge prompt {file}: {part!r} is not a valid template ({err}); write literal braces as {{{{ and }}}}"
        ) from None
    bad = sorted(found - allowed)
    if bad:
        allowed_text = ", ".join("{" + a + "}" for a in sorted(allowed)) or "none"
        raise PromptError(
            f"judge prompt {file}: {part!r} has unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}; "
            f"allowed there: {allowed_text} (write literal braces as {{{{ and }}}})"
        )
    lacking = sorted(required - found)
    if lacking:
        raise PromptError(
            f"judge prompt {file}: {part!r} lacks placeholder(s) {', '.join('{' + x + '}' for x in lacking)}"
        )


def build_messages(request: JudgeRequest, prompt: Prompt = BUILTIN) -> list[dict[str, str]]:
    """Chat messages (OpenAI format) for one item."""
    return prompt.messages(request)


def reask_messages(
    messages: list[dict[str, str]], reply: str, reason: str, prompt: Prompt = BUILTIN
) -> list[dict[str, str]]:
    """The conversation extended by the unparseable reply and a request to answer in the format."""
    return prompt.reask_messages(messages, reply, reason)


def render_plain(messages: list[dict[str, str]]) -> str:
    """A plain-text rendering for models without a chat template (the ``hf`` backend's fallback)."""
    parts = [f"{m['role'].upper()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nASSISTANT:"


# --- Reading the reply: ``(verdict, score)``, or a rejection with its reason.
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
