"""LLaVA-format conversation records -> LLaMA-VID training examples, with the length budget checked up front.

Every record's sequence length (text tokens + frames x tokens per frame) is known before training
starts: the text is tokenised and the frame count is read from the video container (no decoding).
Over-long records are skipped and listed (``too_long: skip``, the default) or stop the run
(``too_long: error``); the visual tokens are never cut. Knowing the lengths up front also makes
the number of steps, the schedule and the data order identical on every process.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedTokenizerBase

from llamavid_eval.core.records import resolve_video
from llamavid_eval.core.tokens import IGNORE_INDEX
from llamavid_eval.model.processing import (
    IMAGE_PLACEHOLDER,
    preprocess_frames,
    qformer_text,
    qformer_tokenizer_inputs,
    training_example,
)
from llamavid_eval.model.video import count_frames, load_visuals
from llamavid_eval.training.config import TrainConfig

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class DataError(ValueError):
    """A record cannot be used; the message names the file, the record id and the fix."""


@dataclass(frozen=True)
class Example:
    """One usable record: the conversation as (question, answer) turns and its sequence length."""

    record_id: str
    visual: Path
    turns: tuple[tuple[str, str], ...]
    frames: int
    length: int


def read_records(path: Path) -> list[dict[str, Any]]:
    """A JSON list (LLaVA style) or JSONL file of records."""
    if not path.is_file():
        raise DataError(f"training data {path} not found (run `llamavid prepare ...` or fix the path)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    if path.suffix == ".jsonl":
        lines = enumerate(text.splitlines(), start=1)
        records = [_json(line, path, number) for number, line in lines if line.strip()]
    else:
        records = _json(text, path, 1)
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise DataError(f"{path}: expected a JSON list (or JSONL lines) of record objects")
    return records


def _json(text: str, path: Path, first_line: int) -> Any:
    """``text`` (which starts on line ``first_line`` of ``path``) parsed; DataError naming file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        line = first_line + error.lineno - 1
        raise DataError(
            f"{path}:{line}: not valid JSON ({error.msg}); fix the line or prepare the data again"
        ) from None


def conversation_turns(record: dict[str, Any], source: str) -> tuple[tuple[str, str], ...]:
    """(question, answer) pairs with ``<image>`` moved to the start of the first question.

    As the original training did (``preprocess_multimodal``): the placeholder is removed wherever it
    stands and ``<image>\\n`` is put in front of the (first) human turn. The original ``imgsp_v1``
    template also repeated the frames in later human turns; our model takes one ``<image>`` per
    sequence, so multi-turn records see the frames once, before the first question.
    """
    messages = record.get("conversations") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) and m.get("value") is not None for m in messages):
        raise DataError(
            f"{source}: record {record.get('id')!r}: conversations must be a list of {{from, value}} objects"
        )
    roles = [ROLES.get(str(m.get("from", "")).lower()) for m in messages]
    if len(messages) < 2 or len(messages) % 2 or roles != ["user", "assistant"] * (len(messages) // 2):
        raise DataError(
            f"{source}: record {record.get('id')!r}: conversations must alternate human/gpt starting with human "
            f"(got {[m.get('from') for m in messages]})"
        )
    texts = [str(m.get("value", "")).replace(IMAGE_PLACEHOLDER, "").strip() for m in messages]
    texts[0] = f"{IMAGE_PLACEHOLDER}\n{texts[0]}"
    return tuple(zip(texts[0::2], texts[1::2], strict=True))


def build_examples(
    records: Sequence[dict[str, Any]],
    source: str,
    data_root: Path,
    tokenizer: PreTrainedTokenizerBase,
    tokens_per_frame: int,
    config: TrainConfig,
) -> tuple[list[Example], list[dict[str, Any]]]:
    """Usable examples plus the skipped ones (id, reason) under the ``too_long`` policy."""
    visuals = []
    for record in records:
        relative = record.get("video") or record.get("image")
        if not relative:
            raise DataError(
                f"{source}: record {record.get('id')!r} has no 'video' or 'image' (text-only is not supported)"
            )
        try:
            visuals.append(Path(resolve_video(relative, data_root)))
        except FileNotFoundError as error:
            raise DataError(f"{source}: record {record.get('id')!r}: {error}") from None
    with ThreadPoolExecutor(max_workers=8) as pool:
        frames = list(pool.map(lambda p: count_frames(p, config.fps, config.max_frames), visuals))

    examples, skipped = [], []
    for record, path, count in zip(records, visuals, frames, strict=True):
        turns = conversation_turns(record, source)
        text_ids, _ = training_example(turns, tokenizer)
        length = len(text_ids) - 1 + count * tokens_per_frame  # the <image> id becomes the visual tokens
        if length > config.max_length:
            reason = (
                f"{length} tokens ({len(text_ids) - 1} text + {count} frames x {tokens_per_frame}) "
                f"> max_length {config.max_length}"
            )
            if config.too_long == "error":
                raise DataError(
                    f"{source}: record {record.get('id')!r} is {reason}; raise max_length, lower "
                    "fps/max_frames, or set too_long=skip"
                )
            skipped.append({"id": record.get("id"), "video": str(path), "reason": reason})
            continue
        examples.append(Example(str(record.get("id")), path, turns, count, length))
    return examples, skipped


def split_holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded share of the examples as evaluation set (at least one when fraction > 0)."""
    if fraction <= 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    count = max(1, round(fraction * len(examples)))
    held = set(order[:count])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


class ConversationDataset(Dataset):
    """Decodes frames and tokenises one example at a time (video decoding runs in loader workers)."""

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
        config: TrainConfig,
        tokens_per_frame: int,
    ) -> None:
        self.examples = list(examples)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.fps, self.max_frames, self.max_length = config.fps, config.max_frames, config.max_length
        self.tokens_per_frame = tokens_per_frame

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        frames = load_visuals([example.visual], fps=self.fps, max_frames=self.max_frames)
        input_ids, labels = training_example(example.turns, self.tokenizer)
        length = len(input_ids) - 1 + len(frames) * self.tokens_per_frame
        if length > self.max_length:  # the container's frame count disagreed with the decoder's
            raise DataError(
                f"record {example.record_id!r}: decoded {len(frames)} frames ({length} tokens) but "
                f"{example.frames} were counted up front; max_length {self.max_length} would be exceeded"
            )
        return {
            "pixel_values": preprocess_frames(self.image_processor, frames),
            "input_ids": input_ids,
            "labels": labels,
            "question": qformer_text(example.turns[0][0]),
            "length": length,
        }


@dataclass
class Collator:
    """Concatenates frames (``segments`` index them per item) and keeps ids/labels as lists (right padding
    happens after the visual tokens are spliced in, inside ``forward_multimodal``)."""

    qformer_tokenizer: PreTrainedTokenizerBase

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        segments, start = [], 0
        for item in items:
            segments.append((start, item["pixel_values"].shape[0]))
            start += item["pixel_values"].shape[0]
        qformer_ids, qformer_mask = qformer_tokenizer_inputs(self.qformer_tokenizer, [i["question"] for i in items])
        return {
            "pixel_values": torch.cat([item["pixel_values"] for item in items]),
            "segments": segments,
            "qformer_input_ids": qformer_ids,
            "qformer_attention_mask": qformer_mask,
            "input_ids": [item["input_ids"] for item in items],
            "labels": [item["labels"] for item in items],
            "num_tokens": torch.tensor(sum(item["length"] for item in items)),
            "num_label_tokens": torch.tensor(sum(int((item["labels"] != IGNORE_INDEX).sum()) for item in items)),
        }


class EpochShuffleSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch): every process and every resumed run sees the same order.

    ``set_epoch`` is what accelerate's data loader calls at the start of each pass.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def resolve_data_path(value: str, root: Path) -> Path:
    """Relative data files are looked up under the data root first, then the working directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() or not (root / path).exists() else root / path


def load_datasets(
    config: TrainConfig, tokenizer: PreTrainedTokenizerBase, image_processor: Any, tokens_per_frame: int
) -> tuple[ConversationDataset, ConversationDataset | None, list[dict[str, Any]]]:
    """Train and (optional) evaluation datasets, plus every skipped record with its reason."""
    from llamavid_eval.core.records import data_root as default_root

    root = Path(config.data_root).expanduser().absolute() if config.data_root else default_root()
    skipped: list[dict[str, Any]] = []

    def examples_of(value: str) -> list[Example]:
        path = resolve_data_path(value, root)
        found, dropped = build_examples(read_records(path), str(path), root, tokenizer, tokens_per_frame, config)
        skipped.extend({**row, "file": str(path)} for row in dropped)
        return found

    train = examples_of(config.train_data)
    train, held_out = split_holdout(train, config.eval_fraction, config.seed)
    evaluation = held_out + (examples_of(config.eval_data) if config.eval_data else [])
    if not train:
        first = f"; first: {skipped[0]}" if skipped else ""
        raise DataError(
            f"no usable training records in {config.train_data}: {len(skipped)} skipped as too long for "
            f"max_length={config.max_length}{first}; {len(held_out)} held out by eval_fraction={config.eval_fraction:g}"
        )

    def dataset(examples: list[Example]) -> ConversationDataset:
        return ConversationDataset(examples, tokenizer, image_processor, config, tokens_per_frame)

    return dataset(train), dataset(evaluation) if evaluation else None, skipped
