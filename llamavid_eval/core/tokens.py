"""Token ids that the model, its prompts and the training labels must agree on (LLaVA's values)."""

IMAGE_TOKEN_INDEX = -200
"""Stands in a prompt's ids where ``<image>`` was; replaced by all frames' visual tokens."""

IGNORE_INDEX = -100
"""Label of a position that carries no loss (prompt, padding, visual tokens)."""
