"""MSVD-QA hooks for the YAMLs in this folder (shared with MSRVTT-QA through ``tasks.common``)."""

from tasks.common.judged import judge_failures, judged_accuracy, judged_mean_score
from tasks.common.local_task import LocalVideoTask
from tasks.common.video_qa import doc_to_target, doc_to_text, doc_to_visual, process_results

__all__ = [
    "LocalVideoTask",
    "doc_to_target",
    "doc_to_text",
    "doc_to_visual",
    "judge_failures",
    "judged_accuracy",
    "judged_mean_score",
    "process_results",
]
