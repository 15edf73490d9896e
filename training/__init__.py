"""Instruction tuning of LLaMA-VID (full, LoRA or stage 1) whose outputs the ``llamavid`` backend loads.

``train(TrainConfig(...)) -> Path``; ``llamavid train --config training/recipes/<name>.yaml``.
The names below are imported on first use, so ``llamavid train --help`` does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "TrainConfig": "config",
    "load_config": "config",
    "merge_lora": "checkpointing",
    "build_random_model": "params",
    "run_training": "recipe",
    "train": "recipe",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
