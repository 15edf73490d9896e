"""lmms-eval task definitions for LLaMA-VID studies (a YAML per task; hooks in tasks/common or a task's utils.py)."""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
