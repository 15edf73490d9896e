"""Judge backends. Import is lazy in :mod:`llamavid_eval.judges.factory` so that ``exact`` needs neither openai nor torch."""
