"""Pluggable LLM judges for open-ended video QA (Video-ChatGPT protocol).

Public API: :func:`get_judge` (choose a backend from a task's YAML metadata + ``LLAMAVID_JUDGE*``
environment variables), :class:`Judge` / :class:`JudgeRequest` / :class:`Judgement` (the contract),
:func:`summarize` (metrics), :data:`PROMPT_VERSION`. Command line: ``python -m judges --help``.
"""

from judges.base import Judge, Judgement, JudgeRequest
from judges.factory import BACKENDS, JudgeSettings, get_judge, resolve_settings
from judges.prompt import PROMPT_VERSION
from judges.summary import summarize

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
