"""Training configuration: one flat dataclass, YAML recipes, ``key=value`` overrides, strict validation.

Flat on purpose: every key can be overridden from the command line as ``--override key=value`` and
appears once in the printed config. Defaults are the original stage-2 short-video recipe
(``scripts/video/train/stage_2_full_v7b_224_fps_1.sh``); see ``training/README.md``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llamavid_eval.core.dtypes import dtype_name

METHODS = ("full", "lora", "stage1")
VISUAL_PARTS = ("qformer", "attention", "projector")
LLAMA_LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _above(low: float) -> Callable[[float], bool]:
    return lambda value: low < value < math.inf


def _at_least(low: float) -> Callable[[float], bool]:
    return lambda value: low <= value < math.inf


#: key -> (test, what it accepts); NaN fails every test. None passes where the key allows it (max_steps).
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    **dict.fromkeys(("fps", "learning_rate", "adam_epsilon"), (_above(0), "a finite number above 0")),
    **dict.fromkeys(
        (
            "max_length",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "num_epochs",
            "log_every",
            "lora_rank",
            "max_steps",
            "max_frames",
            "keep_checkpoints",
        ),
        (_at_least(1), "a whole number of at least 1"),
    ),  # fmt: skip
    **dict.fromkeys(
        ("weight_decay", "max_grad_norm", "save_every", "eval_every", "num_workers"),
        (_at_least(0), "a finite number of at least 0 (0: off)"),
    ),
    "eval_fraction": (lambda value: 0 <= value < 1, "a share in [0, 1)"),
    "warmup_ratio": (lambda value: 0 <= value <= 1, "a share in [0, 1]"),
    "lora_dropout": (lambda value: 0 <= value < 1, "a probability in [0, 1)"),
}


class ConfigError(ValueError):
    """A recipe or override is invalid; the message names the key and what is accepted."""


@dataclass
class TrainConfig:
    """Everything a run needs. Paths may be relative: data against ``data_root``, others against the cwd."""

    # Model: a released (or our own) checkpoint and the files it needs besides its folder.
    base: str = "YanweiLi/llama-vid-7b-full-224-video-fps-1"
    vision_tower: str | None = None  # LAVIS eva_vit_g.pth; default: the checkpoint's mm_vision_tower
    qformer: str | None = None  # LAVIS InstructBLIP file, only for checkpoints without a Q-Former
    qformer_tokenizer: str | None = None  # bert-base-uncased folder or hub id
    attn_implementation: str = "sdpa"
    load_dtype: str = "float32"  # weights in memory; mixed_precision decides the compute dtype

    # Data: LLaVA-format conversation JSON/JSONL as `llamavid prepare` writes it.
    train_data: str = ""
    eval_data: str | None = None
    eval_fraction: float = 0.0  # hold out this share of train_data for the evaluation loss (seeded)
    data_root: str | None = None  # videos and relative data paths; default $LLAMAVID_DATA_ROOT
    fps: float = 1.0
    max_frames: int | None = 300
    max_length: int = 2048  # text + visual tokens (frames x tokens per frame)
    too_long: str = "skip"  # skip (counted, listed in skipped_examples.json) | error
    num_workers: int = 2

    # What trains.
    method: str = "full"  # full | lora | stage1 (visual tokenizer only)
    train_visual: list[str] | str = "auto"  # subset of qformer, attention, projector; auto: from bert_type
    lora_rank: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR_LAYERS))

    # Optimisation (the original recipe's values).
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_epsilon: float = 1e-8
    warmup_ratio: float = 0.03
    num_epochs: int = 1
    max_steps: int | None = None  # optimizer steps; overrides num_epochs
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    max_grad_norm: float = 1.0
    mixed_precision: str = "bf16"  # bf16 | fp16 | no
    gradient_checkpointing: bool = True
    seed: int = 42

    # Output, checkpoints, logging.
    output_dir: str = "outputs/train"
    save_dtype: str = "bfloat16"
    save_every: int = 500  # optimizer steps between resumable checkpoints; 0: none
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto (latest checkpoint in output_dir) | never | <checkpoint folder>
    eval_every: int = 0  # optimizer steps between evaluations; 0: only at the end
    log_every: int = 1
    report_to: list[str] | str = "auto"  # auto | none | [tensorboard, wandb]

    def validate(self) -> TrainConfig:
        """Check values that types cannot; raise :class:`ConfigError` naming the key."""
        choices = {
            "method": METHODS, "too_long": ("skip", "error"), "mixed_precision": ("bf16", "fp16", "no"),
        }  # fmt: skip
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}={getattr(self, key)!r}: expected one of {list(allowed)}")
        for key in ("load_dtype", "save_dtype"):  # any name of the dtype table, stored canonical
            try:
                setattr(self, key, dtype_name(getattr(self, key), key))
            except ValueError as error:
                raise ConfigError(str(error)) from None
        if not self.train_data:
            raise ConfigError("train_data is required (a LLaVA-format JSON/JSONL, e.g. ucf_crime/train_instruct.json)")
        if isinstance(self.train_visual, str) and self.train_visual != "auto":
            raise ConfigError(f"train_visual={self.train_visual!r}: expected 'auto' or a list out of {VISUAL_PARTS}")
        if isinstance(self.train_visual, list) and not set(self.train_visual) <= set(VISUAL_PARTS):
            raise ConfigError(f"train_visual={self.train_visual}: parts must be out of {list(VISUAL_PARTS)}")
        for key, (inside, accepted) in RANGES.items():
            value = getattr(self, key)
            if value is not None and not inside(value):
                raise ConfigError(f"{key}={value}: expected {accepted}")
        if len(self.adam_betas) != 2 or not all(0 <= beta < 1 for beta in self.adam_betas):
            raise ConfigError(f"adam_betas={self.adam_betas}: expected two numbers in [0, 1)")
        if not self.lora_target_modules:
            raise ConfigError(
                "lora_target_modules is empty: name the linear layers LoRA adapts (e.g. [q_proj, v_proj])"
            )
        reporters = [self.report_to] if isinstance(self.report_to, str) else self.report_to
        if not set(reporters) <= {"auto", "none", "tensorboard", "wandb"}:
            raise ConfigError(f"report_to={self.report_to!r}: expected auto, none or a list of tensorboard, wandb")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """Recipe YAML (optional) + overrides -> validated config; unknown keys and wrong types raise."""
    values: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            shipped = Path(__file__).resolve().parent / "recipes"
            raise ConfigError(f"recipe {path} not found; the shipped recipes are in {shipped}")
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of keys to values")
        values.update(_checked(loaded, source=str(path)))
    if isinstance(overrides, dict):
        values.update(_checked(overrides, source="overrides"))
    else:
        values.update(_checked(parse_overrides(overrides or []), source="--override"))
    return TrainConfig(**values).validate()


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "train_visual=[attention]"]`` -> values parsed as YAML scalars/lists."""
    parsed: dict[str, Any] = {}
    hints = typing.get_type_hints(TrainConfig)
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--override {item!r}: expected key=value")
        value = yaml.safe_load(raw) if raw.strip() else None
        if isinstance(value, bool) and hints.get(key) in (str, str | None):  # YAML 1.1 reads `no` as false
            value = raw.strip()
        parsed[key] = value
    return parsed


def _checked(values: dict[str, Any], source: str) -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"{source}: unknown key {key!r}. Known keys: {', '.join(f.name for f in dataclasses.fields(TrainConfig))}"
            )
        checked[key] = _coerce(key, value, hints[key], source)
    return checked


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    """Accept a value if it fits one member of the annotation (ints where floats go; str paths)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool) and isinstance(value, option):
            return value
        if typing.get_origin(option) is list and isinstance(value, list):
            (item_type,) = typing.get_args(option)
            return [_coerce(key, item, item_type, source) for item in value]
    hint = " (YAML reads yes/no/on/off as booleans: quote the word)" if isinstance(value, bool) else ""
    raise ConfigError(f"{source}: {key}={value!r} has type {type(value).__name__}, expected {annotation}{hint}")
