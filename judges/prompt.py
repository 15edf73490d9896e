"""The one judge prompt every backend sends (Video-ChatGPT evaluation protocol).

Keeping a single definition means a verdict from ``openai``, ``local`` and ``hf`` differ only by the
judge model, never by wording. :data:`PROMPT_VERSION` is part of the cache key: change it whenever
the text below changes, so cached verdicts from an older prompt are never reused.
"""

from __future__ import annotations

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


def build_messages(request: JudgeRequest) -> list[dict[str, str]]:
    """Chat messages (OpenAI format) for one item."""
    user = USER_TEMPLATE.format(
        question=request.question.strip(),
        answer=request.answer.strip(),
        prediction=request.prediction.strip(),
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def reask_messages(messages: list[dict[str, str]], reply: str, reason: str) -> list[dict[str, str]]:
    """The conversation extended by the unparseable reply and a request to answer in the format."""
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": REASK_TEMPLATE.format(reason=reason)},
    ]


def render_plain(messages: list[dict[str, str]]) -> str:
    """A plain-text rendering for models without a chat template (the ``hf`` backend's fallback)."""
    parts = [f"{m['role'].upper()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nASSISTANT:"
