"""Leaderboards, judge comparisons and plots from lmms-eval output folders (``llamavid results``)."""
