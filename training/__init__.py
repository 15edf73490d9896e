"""Instruction tuning of LLaMA-VID (full, LoRA or stage 1) whose outputs the ``llamavid`` backend loads.

``train(TrainConfig(...)) -> Path``; ``llamavid train --config training/recipes/<name>.yaml``.
"""

from llamavid_eval.training.checkpointing import merge_lora
from llamavid_eval.training.config import TrainConfig, load_config
from llamavid_eval.training.params import build_random_model
from llamavid_eval.training.recipe import run_training, train

__all__ = ["TrainConfig", "build_random_model", "load_config", "merge_lora", "run_training", "train"]
