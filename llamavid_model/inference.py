"""Batched LLaMA-VID inference: questions grouped by video, each video decoded and encoded once.

Video QA benchmarks ask ~25 questions per video. Only the Q-Former/context step depends on the
question, so a batch holds questions sorted by video: each distinct video is decoded (in worker
threads, ahead of the GPU) and passed through the vision tower once, and all its questions share
those features. Results come back in the callers' order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from llamavid_model.loading import LoadedLlamaVid, decode_answer
from llamavid_model.modeling_llamavid import IMAGE_TOKEN_INDEX
from llamavid_model.processing import (
    IMAGE_PLACEHOLDER,
    preprocess_frames,
    qformer_tokenizer_inputs,
    question_with_placeholder,
    tokenize_with_image,
    vicuna_v1_prompt,
)


@dataclass
class Question:
    """One generation request: a question about the frames that ``load_frames`` returns."""

    question: str
    video_key: Hashable
    load_frames: Callable[[], Sequence[Any]]
    generation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    """Questions (by caller index) with their distinct videos' pixel values."""

    indices: list[int]
    pixel_values: torch.Tensor
    segments: list[tuple[int, int]]


def plan_batches(questions: Sequence[Question], batch_size: int) -> list[list[int]]:
    """Caller indices grouped into batches of ``batch_size``, same video and generation settings adjacent."""
    order = sorted(
        range(len(questions)),
        key=lambda i: (repr(sorted(questions[i].generation.items())), repr(questions[i].video_key), i),
    )
    batches: list[list[int]] = []
    for index in order:
        same_settings = batches and questions[batches[-1][0]].generation == questions[index].generation
        if batches and same_settings and len(batches[-1]) < batch_size:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def prefetched(tasks: Iterable[Callable[[], Batch]], workers: int, depth: int) -> Iterator[Batch]:
    """Run ``tasks`` in ``workers`` threads, at most ``depth`` ahead of the consumer, in order."""
    if workers <= 0:
        for task in tasks:
            yield task()
        return
    pending: deque[Future[Batch]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llamavid-decode") as pool:
        for task in tasks:
            pending.append(pool.submit(task))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class LlamaVidRunner:
    """Turns :class:`Question` lists into answers with a loaded checkpoint."""

    def __init__(
        self, loaded: LoadedLlamaVid, *, batch_size: int = 8, vision_batch_size: int = 64, decode_workers: int = 2
    ) -> None:
        self.loaded = loaded
        if self.device.type == "cuda":
            # PyTorch's cuDNN attention builds a new plan for every new sequence length, and batched
            # generation meets a new length at every decode step: measured 91 -> 119 questions/s on
            # an H100 with it off (benchmarks/RESULTS.md). Flash / memory-efficient kernels remain.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.batch_size = batch_size
        self.vision_batch_size = vision_batch_size
        self.decode_workers = decode_workers

    @property
    def device(self) -> torch.device:
        return self.loaded.model.get_input_embeddings().weight.device

    def _prepare(self, questions: Sequence[Question], indices: list[int]) -> Batch:
        """Decode + preprocess the batch's distinct videos (runs in a worker thread)."""
        pixel_chunks, segments, start_of = [], [], {}
        frame_count = 0
        for index in indices:
            key = questions[index].video_key
            if key not in start_of:
                pixels = preprocess_frames(self.loaded.image_processor, questions[index].load_frames())
                start_of[key] = (frame_count, pixels.shape[0])
                frame_count += pixels.shape[0]
                pixel_chunks.append(pixels)
            segments.append(start_of[key])
        return Batch(indices, torch.cat(pixel_chunks), segments)

    def answer(self, questions: Sequence[Question], progress: Callable[[int], None] | None = None) -> list[str]:
        """Answers in the order of ``questions``; ``progress(n)`` is called after each batch."""
        answers: list[str | None] = [None] * len(questions)
        plan = plan_batches(questions, self.batch_size)
        tasks = (lambda indices=indices: self._prepare(questions, indices) for indices in plan)
        for batch in prefetched(tasks, self.decode_workers, depth=2):
            texts = self.generate_batch([questions[i] for i in batch.indices], batch)
            for index, text in zip(batch.indices, texts, strict=True):
                answers[index] = text
            if progress is not None:
                progress(len(batch.indices))
        return [answer if answer is not None else "" for answer in answers]

    @torch.inference_mode()
    def visual_tokens(self, questions: Sequence[Question], batch: Batch) -> list[torch.Tensor]:
        model = self.loaded.model
        features = model.encode_frames(batch.pixel_values.to(self.device), chunk_size=self.vision_batch_size)
        qformer_ids, qformer_mask = qformer_tokenizer_inputs(
            self.loaded.qformer_tokenizer, [qformer_text(q.question) for q in questions], self.device
        )
        return model.visual_tokens(features, batch.segments, qformer_ids, qformer_mask)

    @torch.inference_mode()
    def generate_batch(self, questions: Sequence[Question], batch: Batch) -> list[str]:
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        visual = self.visual_tokens(questions, batch)
        prompts = [tokenize_with_image(vicuna_v1_prompt([(question_with_placeholder(q.question), None)]), tokenizer)
                   for q in questions]
        # Every prompt starts with the same system text before <image>: its KV cache is computed
        # once per batch (about a third of a short video-QA prompt's prefill) and repeated. The
        # left padding of the question parts then sits between prefix and question, masked out.
        shared = shared_prefix_length(prompts)
        inputs = model.splice_visual_tokens([p[shared:] for p in prompts], visual, padding_side="left")
        embeds, mask, cache = inputs.inputs_embeds, inputs.attention_mask, None
        if shared:
            prefix = prompts[0][:shared].to(self.device)[None]
            cache = model(input_ids=prefix, use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(prompts))
            # generate() expects the whole sequence and itself skips the part the cache holds
            prefix_embeds = model.get_input_embeddings()(prefix).expand(len(prompts), -1, -1)
            embeds = torch.cat([prefix_embeds, embeds], dim=1)
            mask = torch.cat([mask.new_ones(len(prompts), shared), mask], dim=1)
        settings = dict(questions[0].generation)
        stops = settings.pop("until", None) or []
        output = model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            past_key_values=cache,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            eos_token_id=tokenizer.eos_token_id,
            **generation_kwargs(settings),
        )
        return [cut_at_stops(decode_answer(tokenizer, row.tolist()), stops) for row in output]

    @torch.inference_mode()
    def continuation_logprob(self, question: Question, continuation: str) -> tuple[float, bool]:
        """Log-probability of ``continuation`` as the assistant's answer, and whether greedy decoding gives it."""
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        batch = self._prepare([question], [0])
        visual = self.visual_tokens([question], batch)
        turn = question_with_placeholder(question.question)
        context_ids = tokenize_with_image(vicuna_v1_prompt([(turn, None)]), tokenizer)
        full_ids = tokenize_with_image(vicuna_v1_prompt([(turn, None)]) + " " + continuation.strip(), tokenizer)
        answer_length = len(full_ids) - len(context_ids)
        if answer_length <= 0:
            raise ValueError(f"continuation {continuation!r} has no tokens")
        inputs = model.splice_visual_tokens([full_ids], visual, padding_side="right")
        logits = model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask).logits[0].float()
        targets = full_ids[-answer_length:].to(logits.device)
        predicted = logits[-answer_length - 1 : -1]
        logprob = torch.log_softmax(predicted, dim=-1).gather(1, targets[:, None]).sum().item()
        return logprob, bool(torch.equal(predicted.argmax(-1), targets))


def shared_prefix_length(prompts: Sequence[torch.Tensor]) -> int:
    """Length of the text before ``<image>`` when every prompt has the same one, else 0."""
    places = (prompts[0] == IMAGE_TOKEN_INDEX).nonzero().flatten()
    if len(places) == 0:
        return 0
    length = int(places[0])
    prefix = prompts[0][:length]
    return length if all(len(p) > length and torch.equal(p[:length], prefix) for p in prompts) else 0


def qformer_text(question: str) -> str:
    """The Q-Former sees the question alone (no ``<image>`` placeholder)."""
    return question.replace(IMAGE_PLACEHOLDER, " ").strip()


def generation_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """lmms-eval ``gen_kwargs`` -> ``generate`` kwargs; greedy unless sampling is asked for."""
    allowed = {"max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "do_sample", "repetition_penalty",
               "min_new_tokens"}
    unknown = set(settings) - allowed - {"image_aspect_ratio"}
    if unknown:
        raise ValueError(f"unsupported generation option(s) {sorted(unknown)}; supported: {sorted(allowed)}")
    kwargs = {key: value for key, value in settings.items() if key in allowed}
    kwargs.setdefault("max_new_tokens", 1024)
    temperature = float(kwargs.get("temperature", 0) or 0)
    if not kwargs.get("do_sample", False) or temperature == 0:
        kwargs["do_sample"] = False
        for key in ("temperature", "top_p", "top_k"):
            kwargs.pop(key, None)
    if math.isinf(kwargs["max_new_tokens"]):
        raise ValueError("max_new_tokens must be finite")
    return kwargs


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """Truncate at the first stop string (lmms-eval's ``until``)."""
    for stop in stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text.strip()
