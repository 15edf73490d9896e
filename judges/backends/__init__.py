"""Judge backends. Import is lazy in :mod:`judges.factory` so that ``exact`` needs neither openai nor torch."""
