"""The ``llamavid`` lmms-eval model: released LLaMA-VID checkpoints on current transformers.

Usage::

    lmms-eval --model llamavid \\
        --model_args pretrained=<checkpoint dir or hub id>,vision_tower=<eva_vit_g.pth>,fps=1 \\
        --tasks msvd_qa --batch_size 16

``--batch_size`` is the number of questions per LLM batch; questions about the same video share
one decode and one vision-tower pass.

Data parallel: ``accelerate launch --num_processes N -m lmms_eval --model llamavid ...``; each
process loads the model on its own GPU and lmms-eval gives it its share of the documents.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from llamavid_eval.model.inference import LlamaVidRunner, Question
from llamavid_eval.model.loading import load_llamavid, torch_dtype
from llamavid_eval.model.lora import apply_lora
from llamavid_eval.model.video import load_visuals

ATTENTION = ("sdpa", "eager", "flash_attention_2")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 on a GPU, fp32 on the CPU; otherwise any name of the dtype table."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch_dtype(dtype)


def parse_number(value: Any, name: str, kind: type[int] | type[float], minimum: float, exclusive: bool = False) -> Any:
    """A numeric model argument, checked before the (slow) load: a bad value must not wait minutes
    for the weights and then blame a video or a torch internal."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}={value!r} is not {what}") from None
    if not (math.isfinite(number) and (number > minimum if exclusive else number >= minimum)):
        raise ValueError(
            f"{name}={value!r}: give a finite number {'above' if exclusive else 'of at least'} {minimum:g}"
        )
    return number


def parse_bool(value: bool | str, name: str) -> bool:
    """lmms-eval passes model arguments as strings (``compile=True``)."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{name}={value!r} is not a boolean; use {name}=True or {name}=False")


class LlamaVid(lmms):
    """lmms-eval backend for LLaMA-VID (``generate_until`` batched by video, ``loglikelihood``)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        vision_tower: str | None = None,
        qformer: str | None = None,
        qformer_tokenizer: str | None = None,
        lora: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        batch_size: int | str = 8,
        vision_batch_size: int | str = 64,
        decode_workers: int | str = 4,
        compile: bool | str = False,
        fps: float | str = 1.0,
        max_frames: int | str | None = 300,
        image_size: int | str | None = None,
        max_batch_size: int | str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        del max_batch_size  # lmms-eval passes it to every model; batches are exactly --batch_size here
        if unknown or not pretrained:
            missing = "pretrained=<checkpoint folder or hub id> is required; " if not pretrained else ""
            raise ValueError(
                f"{missing}unknown llamavid model argument(s) {sorted(unknown)}; valid: pretrained, vision_tower, "
                "qformer, qformer_tokenizer, lora, device, dtype, attn_implementation, batch_size, vision_batch_size, "
                "decode_workers, compile, fps, max_frames, image_size"
            )
        # every argument checked before the (slow) load
        use_graphs = parse_bool(compile, "compile")
        if attn_implementation not in ATTENTION:
            raise ValueError(f"attn_implementation={attn_implementation!r}; choose one of {ATTENTION}")
        if str(batch_size) == "auto":
            raise ValueError("--batch_size auto is not supported: give the questions per LLM batch, e.g. 64")
        sizes = {
            "batch_size": parse_number(batch_size, "batch_size", int, 1),
            "vision_batch_size": parse_number(vision_batch_size, "vision_batch_size", int, 1),
            "decode_workers": parse_number(decode_workers, "decode_workers", int, 0),
        }
        size = None if image_size in (None, "", "None", "none") else parse_number(image_size, "image_size", int, 1)
        if size not in (None, 224, 336):
            raise ValueError(f"image_size={image_size!r}: the LLaMA-VID towers take 224 or 336")
        if lora and not Path(lora).expanduser().is_dir():
            raise FileNotFoundError(f"lora={lora}: no such folder (a LoRA adapter folder written by llamavid train)")
        accelerator = Accelerator()
        if accelerator.num_processes > 1:
            self._device = accelerator.device  # cuda:<local rank>, or the CPU with ACCELERATE_USE_CPU=true
        else:
            self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        self.fps = float(parse_number(fps, "fps", float, 0, exclusive=True))
        none = max_frames in (None, "None", "none", "")
        self.max_frames = None if none else int(parse_number(max_frames, "max_frames", int, 1))

        loaded = load_llamavid(
            pretrained,
            vision_tower=vision_tower,
            qformer=qformer,
            qformer_tokenizer=qformer_tokenizer,
            image_size=size,
            dtype=resolve_dtype(str(dtype), self._device),
            device=self._device,
            attn_implementation=attn_implementation,
        )
        if lora:
            loaded.model = apply_lora(loaded.model, lora)
        self.runner = LlamaVidRunner(loaded, compile=use_graphs, **sizes)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def device(self) -> torch.device:
        return self._device

    def _question(self, context: str, doc_to_visual, doc_id: int, task: str, split: str, gen: dict) -> Question:
        doc = self.task_dict[task][split][doc_id]
        visuals = [v for v in (doc_to_visual(doc) or []) if v is not None]
        if not visuals:
            raise ValueError(f"{task}/{split} doc {doc_id}: doc_to_visual returned no video or image")
        key = tuple(v if isinstance(v, str) else f"{task}/{split}/{doc_id}/{i}" for i, v in enumerate(visuals))
        loader = functools.partial(load_visuals, visuals, fps=self.fps, max_frames=self.max_frames)
        return Question(question=context, video_key=key, load_frames=loader, generation=dict(gen))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        questions = [
            self._question(ctx, visual, doc_id, task, split, gen)
            for ctx, gen, visual, doc_id, task, split in (r.args for r in requests)
        ]
        with tqdm(total=len(questions), disable=self.rank != 0, desc="llamavid generate") as bar:
            answers = self.runner.answer(questions, progress=bar.update)
        for request, answer in zip(requests, answers, strict=True):
            self.cache_hook.add_partial("generate_until", request.args, answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        for request in tqdm(requests, disable=self.rank != 0, desc="llamavid loglikelihood"):
            context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
            question = self._question(context, doc_to_visual, doc_id, task, split, {})
            target = (
                doc_to_target if isinstance(doc_to_target, str) else doc_to_target(self.task_dict[task][split][doc_id])
            )
            results.append(self.runner.continuation_logprob(question, str(target)))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("llamavid answers single-round prompts; multi-round tasks are not supported")
