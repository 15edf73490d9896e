"""MSVD-QA-shaped throughput: one-question-at-a-time vs the batched backend vs a measured floor.

Full-size LLaMA-VID (EVA-ViT-G + BERT-base Q-Former + Vicuna-7B) with random weights, bf16, on one
GPU, in ONE process:
  (a) the reference evaluation's loop: every question decodes and encodes its video again, batch 1;
  (b) our runner: questions grouped by video (one decode + one tower pass per video), frames
      prepared by worker processes, LLM batches, decoded eagerly and/or with CUDA graphs
      (``--decode eager,graph``; graph = the backend's ``compile=True``);
  (c) a floor from measured rates: tower frames/s at batch 64, Q-Former pairs/s, and the LLM's
      questions/s through the runner's own prefill + decode path at full batch.
Videos are real MP4 files (10 s at 30 fps, 320x240) decoded at 1 fps. Greedy token ids of (b)
are compared with (a); ``--fp32-check`` repeats that comparison with an fp32 model.

    python benchmarks/throughput.py --videos 100 --questions 26 --frames 10 --batch-size 128
    accelerate launch --multi_gpu --num_processes 2 benchmarks/throughput.py --only optimized  # data parallel
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from collector import collector_pauses
from fill import decode_fill
from record import write_record

from llamavid_eval.model.inference import LlamaVidRunner, Question, plan_batches
from llamavid_eval.model.loading import LoadedLlamaVid, load_llm_tokenizer, load_qformer_tokenizer
from llamavid_eval.model.processing import image_processor_for, qformer_tokenizer_inputs
from llamavid_eval.model.random_init import build_random
from llamavid_eval.model.tiny import BASE_CORPUS, write_bert_tokenizer, write_sentencepiece_tokenizer
from llamavid_eval.model.video import load_visuals

QUESTIONS = (
    "what is the man doing?",
    "who is playing the guitar?",
    "what is the woman slicing?",
    "where is the dog running?",
    "what does the child throw?",
    "how many people are dancing?",
)


def write_video(path: Path, index: int, seconds: int) -> Path:
    """One 320x240 MP4 at 30 fps (OpenCV or PyAV, whichever is installed); frames differ per ``index``.
    Written under a temporary name of this process and then renamed, so that a ``path`` that exists
    is whole, also when the ranks of a multi-GPU run write into one ``--video-dir`` at once."""
    final, path = path, path.with_name(f"{path.stem}.{os.getpid()}.partial{path.suffix}")
    # uint8 arithmetic wraps modulo 256, as the pattern needs (int64 frames took as long as encoding)
    ramp = (np.add.outer(np.arange(240), np.arange(320)) % 256).astype(np.uint8)
    shift = np.uint8(index % 256)
    frames = (
        np.dstack([ramp + t, ramp * np.uint8(2) + shift, ramp - t]) for t in np.arange(seconds * 30, dtype=np.uint8)
    )
    try:
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (320, 240))
        for frame in frames:
            writer.write(frame)
        writer.release()
    except ImportError:
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=30)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    return path.replace(final)


def write_videos(folder: Path, count: int, seconds: int, workers: int | None = None) -> list[Path]:
    """``count`` MP4s written by ``workers`` processes (default: one per CPU core). Encoding is CPU
    work of ~1 s a video: 520 videos in one process took longer than a GPU command may run. Videos
    already in ``folder`` are kept (``--video-dir``: later runs of a lease skip the encoding, ~30 s estimated)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"video{index:03d}.mp4" for index in range(count)]
    missing = [index for index, path in enumerate(paths) if not path.exists()]
    workers = min(len(missing), workers or os.cpu_count() or 1)
    if workers <= 1:
        for index in missing:
            write_video(paths[index], index, seconds)
        return paths
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        list(pool.map(write_video, [paths[index] for index in missing], missing, [seconds] * len(missing)))
    return paths


def write_tokenizers(folder: Path) -> Path:
    """Sentencepiece + WordPiece tokenizers whose vocabularies hold every benchmark word whole.

    Vicuna's 32k-piece tokenizer keeps these common words whole too, so prompts have Vicuna-like
    lengths (the tests' 400-piece tokenizer splits words into fragments, ~1.7x longer prompts).
    """
    texts = BASE_CORPUS + QUESTIONS
    for name in ("llm", "bert"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    write_sentencepiece_tokenizer(folder / "llm", texts, vocab_size=1000)
    write_bert_tokenizer(folder / "bert", texts)
    return folder


def random_loaded(tokenizers: Path, work: Path, **build: Any) -> LoadedLlamaVid:
    """A random LLaMA-VID at 7B size (``build_random`` keywords) with the benchmark's tokenizers."""
    return LoadedLlamaVid(
        build_random("7b", **build),
        load_llm_tokenizer(tokenizers / "llm"),
        load_qformer_tokenizer(tokenizers / "bert"),
        image_processor_for(224),
        work,
    )


def decode_video(path: Path) -> list:
    """The frames the runner's workers would decode from ``path`` (1 fps)."""
    return load_visuals([str(path)], fps=1.0)


def decoded_videos(videos: list[Path]) -> dict[Path, list]:
    """Every video's frames, decoded up front by one process per CPU core (``--frames-in-memory``)."""
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 1, mp_context=context) as pool:
        return dict(zip(videos, pool.map(decode_video, videos, chunksize=8), strict=True))


def make_questions(
    videos: list[Path], per_video: int, answer_tokens: int, shared: bool, frames: dict[Path, list] | None = None
) -> list[Question]:
    """MSVD-like questions; ``shared=False`` gives every question its own video key (no reuse).
    With ``frames`` (decoded up front) the runner's workers only preprocess them."""
    settings = {"max_new_tokens": answer_tokens, "min_new_tokens": answer_tokens}
    return [
        Question(
            question=QUESTIONS[q % len(QUESTIONS)],
            video_key=str(path) if shared else f"{path}#{q}",
            load_frames=(lambda path=path: frames[path]) if frames else (lambda path=path: decode_video(path)),
            generation=settings,
        )
        for path in videos
        for q in range(per_video)
    ]


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The shape of the one batch that stages.py and profile_batch.py time."""
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--questions", type=int, default=26)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--answer-tokens", type=int, default=10)


def one_batch_workload(
    args: argparse.Namespace, prefix: str
) -> tuple[LoadedLlamaVid, list[Path], list[Question], list[int]]:
    """A random 7B model on the GPU, just enough videos for one full batch, its questions and their indices."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    tokenizers = write_tokenizers(work / "tokenizers")
    videos = write_videos(work, -(-args.batch_size // args.questions), args.frames)
    loaded = random_loaded(tokenizers, work, device="cuda")
    questions = make_questions(videos, args.questions, args.answer_tokens, shared=True)
    return loaded, videos, questions, plan_batches(questions, args.batch_size)[0]


def timed(fn, sync: bool = True) -> tuple[object, float]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def floor_rates(runner: LlamaVidRunner, frames: int, answer_tokens: int) -> dict[str, float]:
    """Each stage alone at full batch: tower frames/s, Q-Former (question, frame) pairs/s, and the
    LLM's questions/s (prefill + decode with the runner's own prefix sharing and decode path)."""
    loaded, batch_size = runner.loaded, runner.batch_size
    model, device = loaded.model, runner.device
    pixels = torch.randn(64, 3, 224, 224, device=device, dtype=torch.bfloat16)
    model.encode_frames(pixels)
    _, vit_s = timed(lambda: [model.encode_frames(pixels) for _ in range(3)])
    questions = [Question(QUESTIONS[i % len(QUESTIONS)], "v", list) for i in range(batch_size)]
    ids, mask = qformer_tokenizer_inputs(loaded.qformer_tokenizer, [q.question for q in questions], device)
    features = torch.randn(frames, 257, 1408, device=device, dtype=torch.bfloat16)
    segments = [(0, frames)] * batch_size
    settings = {"max_new_tokens": answer_tokens, "min_new_tokens": answer_tokens, "do_sample": False}
    with torch.inference_mode():
        visual = model.visual_tokens(features, segments, ids, mask)
        _, qformer_s = timed(lambda: model.visual_tokens(features, segments, ids, mask))
        llm = lambda: runner.generate(runner.llm_inputs(questions, visual), settings)  # noqa: E731
        llm()
        _, llm_s = timed(llm)
        inputs = runner.llm_inputs(questions, visual)
    return {
        "vit_frames_per_s": 3 * 64 / vit_s,
        "qformer_pairs_per_s": batch_size * frames / qformer_s,
        "llm_questions_per_s": batch_size / llm_s,
        "prompt_tokens": float(inputs.attention_mask.sum(1).float().mean().item()),
        "shared_prefix_tokens": float(inputs.prefix[0][0].shape[2]) if inputs.prefix else 0.0,
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line (host_samples.py reads the same arguments to count batches)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--questions", type=int, default=26, help="questions per video")
    parser.add_argument("--frames", type=int, default=10, help="video length in seconds (= frames at 1 fps)")
    parser.add_argument("--answer-tokens", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--baseline-videos", type=int, default=2, help="videos run through the slow path")
    parser.add_argument("--attn", default="sdpa", help="comma-separated: sdpa,eager,flash_attention_2")
    parser.add_argument(
        "--decode",
        default="eager,graph",
        help="comma-separated decode paths of the optimized runner: eager, graph (CUDA-graph decode steps, "
        "fused norms)",
    )
    parser.add_argument(
        "--decode-workers",
        default="4",
        help="comma-separated: processes that decode and preprocess videos (one row per value and decode path)",
    )
    parser.add_argument(
        "--warmup-videos",
        type=int,
        help="videos of the untimed warm-up run (default: one batch's worth, batch size // questions); "
        "more run the timed run's own batch shapes and two batches in flight before the clock starts",
    )
    parser.add_argument(
        "--fill-probe",
        action="store_true",
        help="after the timed run, time the first batches' videos alone (workers' start, decode; no GPU)",
    )
    parser.add_argument("--only", choices=["all", "optimized"], default="all")
    parser.add_argument(
        "--video-dir",
        type=Path,
        help="keep the written videos here and reuse them in later runs (the same generator: one lease)",
    )
    parser.add_argument(
        "--frames-in-memory",
        action="store_true",
        help="decode every video before the timed run (workers only preprocess): is video decoding the bound?",
    )
    parser.add_argument(
        "--fp32-check",
        action="store_true",
        help="also compare greedy ids batched vs one-at-a-time with an fp32 model (no bf16 rounding)",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    work = Path(tempfile.mkdtemp(prefix="llamavid-bench-"))
    tokenizers = write_tokenizers(work / "tokenizers")
    video_folder = args.video_dir / f"{args.frames}s" if args.video_dir else work
    videos = write_videos(video_folder, args.videos, args.frames)[rank::world]

    rows = []
    for attn in args.attn.split(","):
        try:
            if attn == "flash_attention_2":
                import flash_attn  # noqa: F401  (optional `gpu` extra; builds only on CUDA machines)
            loaded = random_loaded(tokenizers, work, device=device, attn_implementation=attn)
        except (ImportError, ValueError) as error:
            rows.append({"attn": attn, "error": f"{type(error).__name__}: {error}".splitlines()[0]})
            continue
        for workers in [int(count) for count in args.decode_workers.split(",")]:
            for decode in args.decode.split(","):
                rows.append(
                    {
                        "attn": attn,
                        "decode": decode,
                        "decode_workers": workers,
                        "world_size": world,
                        **measure(loaded, videos, args, device, decode, workers),
                    }
                )
                print(json.dumps(rows[-1], default=float), flush=True)
        del loaded
        torch.cuda.empty_cache()
    if args.fp32_check:
        rows.append(fp32_identity(videos, args, tokenizers, work, device))

    if rank == 0 or world > 1:
        print(json.dumps({"rank": rank, "device": torch.cuda.get_device_name(device), "rows": rows}, default=float))
        print_table(rows)
    if rank == 0:
        write_record("throughput", {"arguments": vars(args), "world_size": world, "rows": rows})


def runner_options(decode: str) -> dict[str, bool]:
    """``LlamaVidRunner`` keywords of a ``--decode`` name."""
    if decode not in ("eager", "graph"):
        raise ValueError(f"--decode {decode!r}: choose eager or graph")
    return {"compile": decode == "graph"}


def measure(
    loaded: LoadedLlamaVid,
    videos: list[Path],
    args: argparse.Namespace,
    device: torch.device,
    decode: str,
    workers: int,
) -> dict:
    """Paths (b), then (a) and (c) unless ``--only optimized``."""
    torch.cuda.reset_peak_memory_stats(device)
    fast_runner = LlamaVidRunner(loaded, batch_size=args.batch_size, decode_workers=workers, **runner_options(decode))
    warm_videos = videos[: args.warmup_videos or max(1, args.batch_size // args.questions)]
    _, warmup_s = timed(
        lambda: fast_runner.answer_ids(make_questions(warm_videos, args.questions, args.answer_tokens, shared=True))
    )
    frames = decoded_videos(videos) if args.frames_in_memory else None
    questions = make_questions(videos, args.questions, args.answer_tokens, shared=True, frames=frames)
    answered: list[tuple[float, int]] = []  # (when, how many) per collected batch

    def progress(count: int) -> None:
        answered.append((time.perf_counter(), count))

    started = time.perf_counter()
    with collector_pauses() as pauses:
        fast, fast_s = timed(lambda: fast_runner.answer_ids(questions, progress))  # CUDA graphs were built above
    row: dict[str, object] = {
        "optimized_qps": len(questions) / fast_s,
        **pipeline_rates(started, answered),
        "gc_pauses": pauses,
        "optimized_frames_per_s": len(videos) * args.frames / fast_s,
        "questions": len(questions),
        "warmup_s": warmup_s,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
    }
    if args.fill_probe:  # after the timed run: its workers have exited, and the clock is stopped
        row["fill"] = decode_fill(questions, fast_runner)
    if args.only == "optimized":
        return row
    slow_runner = LlamaVidRunner(loaded, batch_size=1, decode_workers=0)
    subset = make_questions(videos[: args.baseline_videos], args.questions, args.answer_tokens, shared=False)
    slow_runner.answer_ids(subset[:2])  # warm-up
    slow, slow_s = timed(lambda: slow_runner.answer_ids(subset))
    same = sum(a == b for a, b in zip(slow, fast[: len(subset)], strict=True))
    rates = floor_rates(fast_runner, args.frames, args.answer_tokens)
    floor_s = (
        args.frames / args.questions / rates["vit_frames_per_s"]
        + args.frames / rates["qformer_pairs_per_s"]
        + 1 / rates["llm_questions_per_s"]
    )
    row.update(
        one_at_a_time_qps=len(subset) / slow_s,
        speedup=row["optimized_qps"] * slow_s / len(subset),
        floor_qps=1 / floor_s,
        floor_ratio=(1 / floor_s) / row["optimized_qps"],
        greedy_identical_ids=f"{same}/{len(subset)}",
        **rates,
    )
    return row


def pipeline_rates(started: float, answered: list[tuple[float, int]]) -> dict[str, object]:
    """When the first batch's answers reached the host (pipeline fill: workers start, first videos
    decoded, one batch end to end), questions/s from there to the last batch (steady state), and
    each batch's interval."""
    first, last = answered[0][0], answered[-1][0]
    after_first = sum(count for _, count in answered[1:])
    times = [started] + [when for when, _ in answered]
    return {
        "first_batch_s": first - started,
        "steady_qps": after_first / (last - first) if last > first else float("nan"),
        # (seconds since the previous batch's answers, questions) per batch: where fill and tail sit
        "batch_s": [(round(b - a, 4), count) for a, b, (_, count) in zip(times[:-1], times[1:], answered, strict=True)],
    }


def fp32_identity(
    videos: list[Path], args: argparse.Namespace, tokenizers: Path, work: Path, device: torch.device
) -> dict:
    """Greedy ids of the batched paths vs one-at-a-time, all in fp32 (TF32 off).

    In bf16 a random model's top two logits are often closer than bf16 rounding, and batch shape
    changes the rounding, so ids can differ for reasons unrelated to the algorithm; fp32 shows
    whether the paths compute the same thing.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    loaded = random_loaded(tokenizers, work, device=device, dtype=torch.float32)
    subset = make_questions(videos[: args.baseline_videos], args.questions, args.answer_tokens, shared=True)
    single = LlamaVidRunner(loaded, batch_size=1, decode_workers=0).answer_ids(subset)
    row: dict[str, object] = {"attn": "sdpa", "decode": "fp32 check", "questions": len(subset)}
    torch._dynamo.reset()  # the fp32 model's compiled norms get their own compilations
    for decode in args.decode.split(","):
        batched = LlamaVidRunner(loaded, batch_size=args.batch_size, **runner_options(decode)).answer_ids(subset)
        same = sum(a == b for a, b in zip(single, batched, strict=True))
        row[f"fp32_identical_ids_{decode}"] = f"{same}/{len(subset)}"
    del loaded
    torch.cuda.empty_cache()
    return row


def print_table(rows: list[dict]) -> None:
    keys = [
        "attn",
        "decode",
        "decode_workers",
        "world_size",
        "questions",
        "one_at_a_time_qps",
        "optimized_qps",
        "steady_qps",
        "first_batch_s",
        "speedup",
        "floor_qps",
        "floor_ratio",
        "vit_frames_per_s",
        "qformer_pairs_per_s",
        "llm_questions_per_s",
        "prompt_tokens",
        "warmup_s",
        "peak_gib",
        "greedy_identical_ids",
        "fp32_identical_ids_eager",
        "fp32_identical_ids_graph",
        "error",
    ]
    present = [k for k in keys if any(k in row for row in rows)]
    print("| " + " | ".join(present) + " |\n|" + "---|" * len(present))
    for row in rows:
        cells = [f"{row[k]:.1f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in present]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
