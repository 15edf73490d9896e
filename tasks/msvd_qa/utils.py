"""MSVD-QA hooks for the YAMLs in this folder: the shared open-ended, judged video-QA hooks."""

from llamavid_eval.tasks.common.judged_qa import *  # noqa: F403 - the YAMLs name them as utils.<hook>
