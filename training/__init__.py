"""Instruction tuning of LLaMA-VID (full, LoRA or stage 1) whose outputs the ``llamavid`` backend loads.

``train(TrainConfig(...)) -> Path``; ``python -m training train --config training/recipes/<name>.yaml``.
"""

from training.checkpointing import merge_lora
from training.config import TrainConfig, load_config
from training.params import build_random_model
from training.recipe import run_training, train

__all__ = ["TrainConfig", "build_random_model", "load_config", "merge_lora", "run_training", "train"]
