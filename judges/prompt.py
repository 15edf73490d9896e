"""The judge prompt: the built-in wording every backend sends, or a user's prompt file.

One definition per judge means verdicts from ``openai``, ``local`` and ``hf`` differ only by the
judge model, never by wording. The wording still moves verdicts, and ours is not the paper's, so the
prompt is configuration: a prompt file (YAML or JSON; keys ``system``, ``user`` and optionally
``reask``) replaces it, given by ``LLAMAVID_JUDGE_PROMPT`` / ``--judge-prompt`` or, in a swap spec,
``#prompt=FILE``. A prompt's :attr:`Prompt.version` is part of the cache key and of every record: the
built-in one is ``vcgpt-qa-v1`` (change it whenever its text changes), a file's is a hash of its
content, so a verdict is never reused under other wording.
"""

from __future__ import annotations

import hashlib
import json
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

USER_TEMPLATE = (
    "Judge this question-answer pair about a video.\n"
    "Question: {question}\n"
    "Correct Answer: {answer}\n"
    "Predicted Answer: {prediction}\n"
    "Reply with only a Python dictionary string (valid JSON is accepted too) with two keys: "
    "'pred', which is 'yes' if the predicted answer is correct and 'no' otherwise, and 'score', an "
    "integer from 0 to 5. For example: {{'pred': 'yes', 'score': 4}}. Do not write anything else."
)

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
    source: str | None = None  # the file it came from; None for the built-in prompt

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


def load_prompt(path: str | Path | None) -> Prompt:
    """The prompt in file ``path`` (YAML or JSON), or :data:`BUILTIN` for None / ""; :class:`PromptError`
    names what is wrong (unreadable file, unknown key, missing or unknown placeholder)."""
    if path is None or str(path).strip() == "":
        return BUILTIN
    file = Path(path).expanduser()
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
        raise PromptError(f"judge prompt {file}: cannot read it ({err.strerror or err}); check the path") from None
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
