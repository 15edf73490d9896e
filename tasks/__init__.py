"""lmms-eval task definitions for LLaMA-VID studies (YAML + ``utils.py`` per task folder)."""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
