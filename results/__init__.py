"""Leaderboards, judge comparisons and plots from lmms-eval output folders (``python -m results``)."""
