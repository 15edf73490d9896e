"""Run logging: stdout lines and ``train_log.jsonl`` always, TensorBoard / Weights & Biases when available.

Only the main process writes; every value is already reduced across processes by the caller.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available, is_wandb_available
from tqdm.auto import tqdm

from llamavid_eval.training.config import TrainConfig

PROJECT = "llamavid-train"


def trackers(config: TrainConfig) -> list[str]:
    """``auto``: TensorBoard when installed, wandb when installed *and* configured (it would prompt otherwise)."""
    wanted = [config.report_to] if isinstance(config.report_to, str) else list(config.report_to)
    if "none" in wanted:
        return []
    if "auto" in wanted:
        wanted = ["tensorboard"] if is_tensorboard_available() else []
        if is_wandb_available() and (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
            wanted.append("wandb")
    return wanted


class RunLogger:
    """Writes metric rows to stdout (through tqdm, so the bar stays intact), JSONL and the trackers."""

    def __init__(self, accelerator: Accelerator, output: Path, config: TrainConfig, resumed_at: int | None) -> None:
        """``resumed_at``: the step of the checkpoint a resumed run starts from; the rows an interrupted run
        logged after it are dropped (the resumed run logs those steps again), the earlier ones kept."""
        self.accelerator = accelerator
        self.path = output / "train_log.jsonl"
        self.start = time.perf_counter()
        if accelerator.is_main_process and resumed_at is None:
            self.path.unlink(missing_ok=True)
        elif accelerator.is_main_process and self.path.is_file():
            kept = [row for row in read_log(output) if row.get("step", 0) <= resumed_at]
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        if accelerator.log_with:
            flat = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in config.to_dict().items()}
            accelerator.init_trackers(PROJECT, config=flat)

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.accelerator.is_main_process:
            return
        row = {"step": step, **values, "elapsed_s": round(time.perf_counter() - self.start, 3)}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        tqdm.write(" ".join(f"{k}={_short(v)}" for k, v in row.items()))
        if self.accelerator.log_with:
            self.accelerator.log(
                {
                    f"{'eval' if 'eval_loss' in values else 'train'}/{k}": v
                    for k, v in values.items()
                    if isinstance(v, int | float)
                },
                step=step,
            )

    def info(self, message: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(message)


def read_log(output_dir: str | Path) -> list[dict[str, Any]]:
    """The rows a run wrote to ``train_log.jsonl`` (for tests and notebooks)."""
    path = Path(output_dir) / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
