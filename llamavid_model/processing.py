"""Inputs as the released checkpoints expect them: CLIP-style frames, vicuna_v1 prompts, Q-Former text.

The released configs name an image-processor folder inside the original repository
(``llamavid/processor/clip-patch14-224``); we build the equivalent ``CLIPImageProcessor`` here
so nothing depends on that path existing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from llamavid_eval.core.records import IMAGE_PLACEHOLDER
from llamavid_eval.core.tokens import IGNORE_INDEX, IMAGE_TOKEN_INDEX

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QFORMER_MAX_LENGTH = 256


def image_processor_for(size: int) -> CLIPImageProcessorPil:
    """Resize shortest side to ``size`` (bicubic), centre-crop, CLIP mean/std: the released preprocessing."""
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": size},
        resample=3,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def image_size_from_processor_name(name: str | None, default: int = 224) -> int:
    """``.../clip-patch14-336`` -> 336; the released configs encode the size only in that path."""
    match = re.search(r"(\d{3})/?$", name or "")
    return int(match.group(1)) if match else default


def preprocess_frames(
    processor: CLIPImageProcessorPil, frames: np.ndarray | Sequence[Image.Image | np.ndarray]
) -> torch.Tensor:
    """``[T, H, W, 3]`` uint8 frames or PIL images -> ``[T, 3, S, S]`` float32 pixel values."""
    if len(frames) == 0:
        raise ValueError("no frames to preprocess (the video or image list is empty)")
    images = [frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame)) for frame in frames]
    return processor(images=images, return_tensors="pt")["pixel_values"]


def vicuna_v1_prompt(turns: Sequence[tuple[str, str | None]]) -> str:
    """The ``vicuna_v1`` conversation: ``SYSTEM USER: q ASSISTANT: a</s>USER: ...`` (last answer open)."""
    text = VICUNA_V1_SYSTEM + " "
    for index, (question, answer) in enumerate(turns):
        text += f"USER: {question} ASSISTANT:"
        if answer is not None:
            text += f" {answer}</s>"
        elif index != len(turns) - 1:
            raise ValueError("only the last turn may be left unanswered")
    return text


def question_with_placeholder(question: str) -> str:
    """``<image>\\n{question}``, as the original video evaluation writes the first user turn."""
    return question if IMAGE_PLACEHOLDER in question else f"{IMAGE_PLACEHOLDER}\n{question}"


def tokenize_with_image(prompt: str, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Token ids with ``IMAGE_TOKEN_INDEX`` where ``<image>`` stood; one BOS at the start.

    Each text chunk is tokenised on its own (as the original does), so the ids around the
    placeholder are exactly those the checkpoints were trained on.
    """
    ids: list[int] = []
    for index, chunk in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
        ids.append(tokenizer.bos_token_id if index == 0 else IMAGE_TOKEN_INDEX)
        ids.extend(_chunk_ids(tokenizer, chunk))
    return torch.tensor(ids, dtype=torch.long)


@functools.lru_cache(maxsize=4096)
def _chunk_ids(tokenizer: PreTrainedTokenizerBase, chunk: str) -> tuple[int, ...]:
    """A text chunk's ids without BOS; cached, since every prompt of a run starts with the same system text."""
    chunk_ids = tokenizer(chunk).input_ids
    if chunk_ids and chunk_ids[0] == tokenizer.bos_token_id:
        chunk_ids = chunk_ids[1:]
    return tuple(chunk_ids)


def training_example(
    turns: Sequence[tuple[str, str]], tokenizer: PreTrainedTokenizerBase, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and labels for a conversation; labels keep only the assistant answers (+ ``</s>``).

    Raises instead of truncating when ``max_length`` would cut the prompt (visual tokens are
    added later, so the caller passes the text budget left after them).
    """
    ids = tokenize_with_image(vicuna_v1_prompt(turns), tokenizer)
    labels = torch.full_like(ids, IGNORE_INDEX)
    prefix = VICUNA_V1_SYSTEM + " "
    for question, answer in turns:
        prefix += f"USER: {question} ASSISTANT:"
        start = len(tokenize_with_image(prefix, tokenizer))
        prefix += f" {answer}</s>"
        end = len(tokenize_with_image(prefix, tokenizer))
        labels[start:end] = ids[start:end]
    if max_length is not None and len(ids) > max_length:
        raise ValueError(
            f"conversation is {len(ids)} text tokens, over the budget of {max_length}; raise max_length "
            "or shorten the conversation (we never truncate silently)"
        )
    return ids, labels


def qformer_tokenizer_inputs(
    tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Q-Former text: the question alone, left-truncated to 256 tokens, padded to the longest."""
    batch = tokenizer(
        list(questions), padding="longest", truncation=True, max_length=QFORMER_MAX_LENGTH, return_tensors="pt"
    )
    return batch.input_ids.to(device), batch.attention_mask.to(device)


def qformer_text(question: str) -> str:
    """The Q-Former sees the question alone (no ``<image>`` placeholder)."""
    return question.replace(IMAGE_PLACEHOLDER, " ").strip()
