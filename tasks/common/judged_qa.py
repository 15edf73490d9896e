"""Every hook an open-ended, LLM-judged video-QA task's YAML names (``msvd_qa``, ``msrvtt_qa``,
``animal_kingdom``): the task class, the doc hooks, the judged metrics and their interval rows.

lmms-eval resolves ``!function utils.<hook>`` against the ``utils.py`` beside each YAML, so each of
those folders keeps a one-line ``utils.py`` that re-exports this module.
"""

from llamavid_eval.tasks.common.judged import JUDGED_INTERVALS, judge_failures, judged_accuracy, judged_mean_score
from llamavid_eval.tasks.common.local_task import LocalVideoTask
from llamavid_eval.tasks.common.video_qa import doc_to_target, doc_to_text, doc_to_visual, process_results

__all__ = [
    "LocalVideoTask",
    "doc_to_target",
    "doc_to_text",
    "doc_to_visual",
    "judge_failures",
    "judged_accuracy",
    "judged_mean_score",
    "process_results",
    *JUDGED_INTERVALS,
]
globals().update(JUDGED_INTERVALS)  # the YAML names them: !function utils.accuracy_ci_low, ...
