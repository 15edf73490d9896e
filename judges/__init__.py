"""Pluggable LLM judges for open-ended video QA (Video-ChatGPT protocol)."""

from judges.base import Judge, Judgement, JudgeRequest

__all__ = ["Judge", "Judgement", "JudgeRequest"]
