"""Pluggable LLM judges for open-ended video QA (Video-ChatGPT protocol).

Public API: :func:`get_judge` (choose a backend from a task's YAML metadata + ``LLAMAVID_JUDGE*``
environment variables), :class:`Judge` / :class:`JudgeRequest` / :class:`Judgement` (the contract),
:func:`summarize` (metrics), :data:`PROMPT_VERSION`. Command line: ``llamavid judge --help``.
"""

from llamavid_eval.judges.base import Judge, Judgement, JudgeRequest
from llamavid_eval.judges.factory import BACKENDS, JudgeSettings, get_judge, resolve_settings
from llamavid_eval.judges.prompt import PROMPT_VERSION
from llamavid_eval.judges.summary import summarize

__all__ = [
    "BACKENDS",
    "PROMPT_VERSION",
    "Judge",
    "JudgeRequest",
    "JudgeSettings",
    "Judgement",
    "get_judge",
    "resolve_settings",
    "summarize",
]
