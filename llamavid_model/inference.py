"""Batched LLaMA-VID inference: questions grouped by video, each video decoded and encoded once.

Video QA benchmarks ask ~25 questions per video. Only the Q-Former/context step depends on the
question, so a batch holds questions sorted by video (:func:`plan_batches`) and carries each distinct
video's pixels once: each video is decoded and passed through the vision tower once, and all its
questions share those features. Results come back in the callers' order. Decoding and PIL
preprocessing run in ``torch.utils.data.DataLoader`` worker *processes*, one video per task
(:func:`prepared_batches`), so they overlap the GPU work without competing for the GIL with the
thread that launches it: on an H100 one 128-question batch is ~430 ms of CPU work in one process
against ~410 ms of GPU work (``benchmarks/stages.py``).
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.profiler import record_function
from torch.utils.data import DataLoader, Dataset

from llamavid_eval.core.tokens import IMAGE_TOKEN_INDEX
from llamavid_eval.generation.decoding import (
    GraphDecoder,
    LlmInputs,
    PendingDecode,
    PrefixKV,
    generate_eager,
    prefix_kv,
    to_device,
)
from llamavid_eval.generation.fusion import fuse_gated_mlps, fuse_rms_norms, fuse_rotary
from llamavid_eval.model.loading import LoadedLlamaVid, decode_answer
from llamavid_eval.model.processing import (
    preprocess_frames,
    qformer_text,
    qformer_tokenizer_inputs,
    question_with_placeholder,
    tokenize_with_image,
    vicuna_v1_prompt,
)
from llamavid_eval.model.video import VideoDecodeError


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


def plan_batches(questions: Sequence[Question], batch_size: int, first_videos: int = 0) -> list[list[int]]:
    """Caller indices grouped into batches of ``batch_size``, same video and generation settings adjacent.

    ``first_videos`` > 0 closes the first batch after that many distinct videos: the GPU starts once
    each decode worker has delivered one video, instead of waiting for a whole batch's videos
    (a run's pipeline fill; benchmarks/RESULTS.md), and the batches after it are full again.
    """
    order = sorted(
        range(len(questions)),
        key=lambda i: (repr(sorted(questions[i].generation.items())), repr(questions[i].video_key), i),
    )
    batches: list[list[int]] = []
    first_keys: set[Hashable] = set()
    for index in order:
        same_settings = batches and questions[batches[-1][0]].generation == questions[index].generation
        first_closed = (
            len(batches) == 1 and len(first_keys) == first_videos and questions[index].video_key not in first_keys
        )
        if batches and same_settings and len(batches[-1]) < batch_size and not first_closed:
            batches[-1].append(index)
        else:
            batches.append([index])
        if len(batches) == 1:
            first_keys.add(questions[index].video_key)
    return batches


def first_asked(questions: Sequence[Question], indices: list[int]) -> list[int]:
    """Of ``indices``, the first question about each distinct video (whose frames the batch loads)."""
    seen: set[Hashable] = set()
    firsts = []
    for index in indices:
        if questions[index].video_key not in seen:
            seen.add(questions[index].video_key)
            firsts.append(index)
    return firsts


def prepare_video(questions: Sequence[Question], index: int, image_processor: Any) -> torch.Tensor:
    """Decoded and preprocessed frames of question ``index``'s video, ``[frames, 3, H, W]``."""
    return preprocess_frames(image_processor, questions[index].load_frames())


def assemble_batch(
    questions: Sequence[Question], indices: list[int], videos: Sequence[torch.Tensor], pin_memory: bool = False
) -> Batch:
    """The batch of ``indices`` from its distinct videos' pixels (in :func:`first_asked` order),
    copied once into one tensor, page-locked when it goes to a GPU (for an asynchronous copy)."""
    start_of, frame_count = {}, 0
    for index, pixels in zip(first_asked(questions, indices), videos, strict=True):
        start_of[questions[index].video_key] = (frame_count, pixels.shape[0])
        frame_count += pixels.shape[0]
    pixel_values = torch.empty((frame_count, *videos[0].shape[1:]), dtype=videos[0].dtype, pin_memory=pin_memory)
    torch.cat(list(videos), out=pixel_values)
    return Batch(indices, pixel_values, [start_of[questions[index].video_key] for index in indices])


def prepare_batch(questions: Sequence[Question], indices: list[int], image_processor: Any) -> Batch:
    """Decode + preprocess the distinct videos of the questions at ``indices``."""
    videos = [prepare_video(questions, index, image_processor) for index in first_asked(questions, indices)]
    return assemble_batch(questions, indices, videos)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects alive now (libraries, the model, the questions) out of the cyclic garbage
    collector while the batches run, as Python's ``gc.freeze`` documentation advises before forking
    workers: a full collection otherwise walks them all (~0.5M objects; 0.33-0.35 s on an H100
    host, once in a 13,520-question run, benchmarks/RESULTS.md), a pause of the loop that launches
    the GPU's work, and a forked worker's collections write to the parent's object pages
    (copy-on-write). Objects still go when their last reference does; only cycles among them wait
    until the heap is unfrozen at the end (unless someone else froze it first)."""
    already_frozen = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not already_frozen:
            gc.unfreeze()


class PlannedVideos(Dataset):
    """Item ``i`` is the ``i``-th video the plan loads (each batch loads its distinct videos)."""

    def __init__(self, questions: Sequence[Question], loads: list[int], image_processor: Any) -> None:
        self.questions, self.loads, self.image_processor = questions, loads, image_processor

    def __len__(self) -> int:
        return len(self.loads)

    def __getitem__(self, item: int) -> torch.Tensor | VideoDecodeError:
        """The video's pixels, or its decode error as a value: raised by a worker, torch would wrap it in
        a traceback whose first line names a worker process, not the file."""
        try:
            return prepare_video(self.questions, self.loads[item], self.image_processor)
        except VideoDecodeError as error:
            return error


def delivered(video: torch.Tensor | VideoDecodeError) -> torch.Tensor:
    """A worker's video, or its decode error raised here, with the way out."""
    if isinstance(video, VideoDecodeError):
        raise VideoDecodeError(
            f"{video}. No answer of this run was written: remove the file or replace it, or run `llamavid prepare` "
            "again (it probes every video and leaves damaged ones out, listed in its report), then rerun"
        )
    return video


def prepared_batches(
    questions: Sequence[Question], plan: list[list[int]], image_processor: Any, workers: int, pin_memory: bool
) -> Iterator[Batch]:
    """The plan's batches in order; their videos decoded by ``workers`` processes, two batches ahead.

    One video per worker task, not one batch: the first batch waits for its videos decoded side by
    side, not one after another in one worker (a 512-question batch's 20 videos took 3.9 s before
    the GPU had work; H200 record ``20261206T035529Z_throughput``). ``workers=0`` decodes in this
    process. Workers are forked where the platform allows it (they never touch the GPU), so
    ``load_frames`` callables need not be picklable there.
    """
    per_batch = [first_asked(questions, indices) for indices in plan]
    loads = [index for firsts in per_batch for index in firsts]
    context = "fork" if workers and "fork" in multiprocessing.get_all_start_methods() else None
    # tasks each worker keeps queued: together, two batches' videos
    ahead = max(2, math.ceil(2 * max(map(len, per_batch), default=1) / workers)) if workers else None
    videos = iter(
        DataLoader(
            PlannedVideos(questions, loads, image_processor),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=ahead,
            multiprocessing_context=context,
        )
    )
    for indices, firsts in zip(plan, per_batch, strict=True):
        yield assemble_batch(questions, indices, [delivered(next(videos)) for _ in firsts], pin_memory)


class LlamaVidRunner:
    """Turns :class:`Question` lists into answers with a loaded checkpoint."""

    def __init__(
        self,
        loaded: LoadedLlamaVid,
        *,
        batch_size: int = 8,
        vision_batch_size: int = 64,
        decode_workers: int = 4,
        compile: bool = False,
    ) -> None:
        self.loaded = loaded
        # a cache rounded up to 8 slots, not 32: each decode step reads every slot of every row
        self.graph_decoder = GraphDecoder(loaded.model, batch_size, bucket=8) if compile else None
        if compile and self.device.type == "cuda":
            fuse_rms_norms(loaded.model)  # in place: +4.6% questions/s on an H200 (benchmarks/RESULTS.md)
            fuse_rotary(loaded.model)
            fuse_gated_mlps(loaded.model)
        self._prefix: tuple[tuple[int, ...], PrefixKV] | None = None
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

    def answer(self, questions: Sequence[Question], progress: Callable[[int], None] | None = None) -> list[str]:
        """Answers in the order of ``questions``; ``progress(n)`` is called after each batch."""
        tokenizer = self.loaded.tokenizer
        return [
            cut_at_stops(decode_answer(tokenizer, ids), question.generation.get("until") or [])
            for question, ids in zip(questions, self.answer_ids(questions, progress), strict=True)
        ]

    def plan(self, questions: Sequence[Question]) -> list[list[int]]:
        """The batches :meth:`answer_ids` runs: a short first batch of one video per decode worker
        (+1.0% over a 13,520-question run on an H100, benchmarks/RESULTS.md), then full ones."""
        return plan_batches(questions, self.batch_size, first_videos=self.decode_workers)

    def prepared(self, questions: Sequence[Question], plan: list[list[int]]) -> Iterator[Batch]:
        """``plan``'s batches as :meth:`answer_ids` gets them: this runner's decode workers, pinned
        pixels on CUDA (also what the fill probe, benchmarks/fill.py, times)."""
        return prepared_batches(
            questions, plan, self.loaded.image_processor, self.decode_workers, pin_memory=self.device.type == "cuda"
        )

    def answer_ids(
        self, questions: Sequence[Question], progress: Callable[[int], None] | None = None
    ) -> list[list[int]]:
        """Generated token ids in the order of ``questions`` (what :meth:`answer` decodes)."""
        answers: list[list[int]] = [[] for _ in questions]
        batches = self.prepared(questions, self.plan(questions))

        def collect(indices: list[int], pending: PendingDecode) -> None:
            for index, row in zip(indices, pending.rows(), strict=True):
                answers[index] = row
            if progress is not None:
                progress(len(indices))

        # Software pipeline: batch n+1's tower, Q-Former and prompt splice are queued on the GPU
        # before the host waits for batch n's answers, so the GPU never idles while the host
        # tokenises and splices (~50 ms of host work per 128-question batch).
        # The named ranges show up in torch.profiler traces (benchmarks/timeline.py).
        previous: tuple[list[int], PendingDecode] | None = None
        with frozen_heap():  # entered before the first batch forks the video workers
            for batch in batches:
                batch_questions = [questions[i] for i in batch.indices]
                visual = self.visual_tokens(batch_questions, batch)
                with record_function("llamavid.llm_inputs"):
                    inputs = self.llm_inputs(batch_questions, visual)
                if previous is not None:
                    with record_function("llamavid.collect"):
                        collect(*previous)
                with record_function("llamavid.launch"):
                    previous = (batch.indices, self.launch(inputs, batch_questions[0].generation))
            if previous is not None:
                with record_function("llamavid.collect"):
                    collect(*previous)
        return answers

    @torch.inference_mode()
    def visual_tokens(self, questions: Sequence[Question], batch: Batch) -> list[torch.Tensor]:
        model = self.loaded.model
        with record_function("llamavid.tower"):
            pixels = to_device(batch.pixel_values, self.device)
            features = model.encode_frames(pixels, chunk_size=self.vision_batch_size)
        with record_function("llamavid.qformer"):
            # tokenised on the host and copied without blocking: a blocking copy would wait for the tower
            qformer_ids, qformer_mask = qformer_tokenizer_inputs(
                self.loaded.qformer_tokenizer, [qformer_text(q.question) for q in questions]
            )
            qformer_ids = to_device(qformer_ids, self.device)
            qformer_mask = to_device(qformer_mask, self.device)
            return model.visual_tokens(features, batch.segments, qformer_ids, qformer_mask)

    @torch.inference_mode()
    def generate_batch(self, questions: Sequence[Question], batch: Batch) -> list[list[int]]:
        """New token ids for one planned batch (same generation settings throughout)."""
        return self.launch(
            self.llm_inputs(questions, self.visual_tokens(questions, batch)), questions[0].generation
        ).rows()

    @torch.inference_mode()
    def llm_inputs(self, questions: Sequence[Question], visual: Sequence[torch.Tensor]) -> LlmInputs:
        """Prompts with visual tokens spliced in, left padded; the shared system-prompt prefix run once.

        Every prompt starts with the same system text before ``<image>``: its KV cache is computed
        once per batch (about half of a short video-QA prompt's prefill) and repeated. The left
        padding of the question parts then sits between prefix and question, masked out.
        """
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        prompts = [
            tokenize_with_image(vicuna_v1_prompt([(question_with_placeholder(q.question), None)]), tokenizer)
            for q in questions
        ]
        shared = shared_prefix_length(prompts)
        inputs = model.splice_visual_tokens([p[shared:] for p in prompts], visual, padding_side="left")
        if not shared:
            return LlmInputs(inputs.inputs_embeds, inputs.attention_mask)
        prefix = prompts[0][:shared]
        prefix_kv_ = self._prefix_kv(prefix)
        # generate() expects the whole sequence and itself skips the part the cache holds
        prefix_ids = to_device(prefix, self.device)[None]
        prefix_embeds = model.get_input_embeddings()(prefix_ids).expand(len(prompts), -1, -1)
        embeds = torch.cat([prefix_embeds, inputs.inputs_embeds], dim=1)
        mask = torch.cat([inputs.attention_mask.new_ones(len(prompts), shared), inputs.attention_mask], dim=1)
        return LlmInputs(embeds, mask, prefix_kv_)

    def _prefix_kv(self, prefix: torch.Tensor) -> PrefixKV:
        """The shared prefix's KV (``prefix``: ids on the host), computed once per runner (every batch
        has the same system prompt; the runner assumes the model's weights no longer change)."""
        key = tuple(prefix.tolist())
        if self._prefix is None or self._prefix[0] != key:
            self._prefix = (key, prefix_kv(self.loaded.model, prefix.to(self.device)[None]))
        return self._prefix[1]

    @torch.inference_mode()
    def generate(self, inputs: LlmInputs, kwargs: dict[str, Any]) -> list[list[int]]:
        """New token ids per row of ``inputs`` for ``generate`` kwargs (see :meth:`launch`)."""
        return self._launch(inputs, kwargs).rows()

    def launch(self, inputs: LlmInputs, settings: dict[str, Any]) -> PendingDecode:
        """Start decoding ``inputs`` with a question's lmms-eval generation settings."""
        kwargs = generation_kwargs({key: value for key, value in settings.items() if key != "until"})
        return self._launch(inputs, kwargs)

    @torch.inference_mode()
    def _launch(self, inputs: LlmInputs, kwargs: dict[str, Any]) -> PendingDecode:
        """Static-cache CUDA-graph decoding when the runner compiles, else ``generate``."""
        tokenizer = self.loaded.tokenizer
        kwargs = {**kwargs, "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0}
        if self.graph_decoder is not None:
            return self.graph_decoder.launch(inputs, eos_token_id=tokenizer.eos_token_id, **kwargs)
        rows = generate_eager(self.loaded.model, inputs, eos_token_id=tokenizer.eos_token_id, **kwargs)
        return PendingDecode(self.loaded.model, inputs, tokenizer.eos_token_id, {}, done=rows)

    @torch.inference_mode()
    def continuation_logprob(self, question: Question, continuation: str) -> tuple[float, bool]:
        """Log-probability of ``continuation`` as the assistant's answer, and whether greedy decoding gives it."""
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        batch = prepare_batch([question], [0], self.loaded.image_processor)
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


def generation_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """lmms-eval ``gen_kwargs`` -> ``generate`` kwargs; greedy unless sampling is asked for."""
    allowed = {
        "max_new_tokens",
        "temperature",
        "top_p",
        "top_k",
        "num_beams",
        "do_sample",
        "repetition_penalty",
        "min_new_tokens",
    }
    unknown = set(settings) - allowed - {"image_aspect_ratio"}
    if unknown:
        raise ValueError(f"unsupported generation option(s) {sorted(unknown)}; supported: {sorted(allowed)}")
    kwargs = {key: value for key, value in settings.items() if key in allowed}
    kwargs.setdefault("max_new_tokens", 1024)
    temperature = float(kwargs.get("temperature", 0) or 0)
    if temperature > 0 and not kwargs.get("do_sample", False):  # greedy would ignore it, and the run's
        raise ValueError(  # record would still say temperature=0.2
            f"temperature={temperature:g} with do_sample=False: greedy decoding ignores the temperature. To sample "
            "as the original evaluation did, add do_sample=True (--gen_kwargs do_sample=True,temperature=0.2); "
            "for greedy answers, leave temperature out"
        )
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
