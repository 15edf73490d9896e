"""One judged MSVD-QA-sized evaluation through the real ``lmms-eval --model llamavid --tasks msvd_qa``.

Everything a user's run has, at full size, in the released on-disk layouts: synthetic MP4 videos
prepared with ``llamavid prepare msvd_qa`` into a data root; a random-weight LLaMA-VID 7B written
as a released checkpoint (safetensors shards + LAVIS EVA-ViT-G and Q-Former files + tokenizers);
the in-process ``hf`` judge loading an 8B Llama-3-shaped random judge from disk whose replies are
a 12-token verdict (``random_judge.py``), re-asks and the verdict cache off. Answers are 10 tokens
(``--gen_kwargs max_new_tokens=10``; a random model rarely emits eos). lmms-eval runs in this
process (its own command-line entry point) so that the phases can be timed: loading the video
model, answering (``generate_until``), loading the judge, judging, and the rest (task building,
dataset loading, metrics and intervals, writing results). ``wall_s`` is the measured run for all
questions; the set-up before it (videos, checkpoints) is timed apart and is no part of a user's run.

Set-up fits one 10-minute GPU command at full size: the random weights are built on the GPU, and
the videos are written by one process per CPU core while the checkpoints are written. Both models
load from the page cache (just written), not from a cold disk.

MSVD-QA's test split: 13,157 questions about 520 videos (25.3 per video)::

    python benchmarks/end_to_end.py --videos 520 --total-questions 13157
    python benchmarks/end_to_end.py --size tiny --videos 4 --questions 3   # CPU check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from random_judge import WORDS, build_judge, build_tokenizer  # noqa: E402
from record import write_record  # noqa: E402
from throughput import write_tokenizers, write_videos  # noqa: E402

from llamavid_eval.model.random_init import build_random  # noqa: E402
from llamavid_eval.model.saving import save_released  # noqa: E402
from llamavid_eval.model.tiny import lavis_qformer_state, lavis_vision_state, write_tiny_release  # noqa: E402

STARTS = ("what is the", "who is", "where is the", "how many", "what does the")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def questions_per_video(videos: int, per_video: int, total: int | None) -> list[int]:
    """``per_video`` each, or ``total`` spread as evenly as possible (the first videos get one more)."""
    if total is None:
        return [per_video] * videos
    return [total // videos + (index < total % videos) for index in range(videos)]


def write_dataset(work: Path, counts: list[int], seconds: int) -> Path:
    """Videos + an MSVD-style QA file, prepared with the real command into ``work/data``."""
    paths = write_videos(work, len(counts), seconds)
    rng = random.Random(0)
    videos = [path.stem for path, count in zip(paths, counts, strict=True) for _ in range(count)]
    rows = [
        {
            "video_id": video,
            "id": number,
            "answer": rng.choice(WORDS),
            "question": f"{rng.choice(STARTS)} {' '.join(rng.choices(WORDS, k=rng.randint(1, 3)))}?",
        }
        for number, video in enumerate(videos)
    ]
    qa = work / "test_qa.json"
    qa.write_text(json.dumps(rows))
    command = [
        sys.executable,
        "-m",
        "llamavid_eval.tasks.prepare",
        "msvd_qa",
        "--qa",
        str(qa),
        "--videos",
        str(work),
        "--root",
        str(work / "data"),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return work / "data"


def write_video_model(work: Path, size: str) -> tuple[Path, Path, Path, Path]:
    """Random LLaMA-VID in the released layout: checkpoint, EVA-ViT-G file, Q-Former file, BERT tokenizer."""
    if size == "tiny":
        release = write_tiny_release(work / "tiny", corpus=(" ".join(WORDS),))
        return release.checkpoint, release.vision_tower, release.qformer, release.bert_tokenizer
    tokenizers = write_tokenizers(work / "tokenizers")
    model = build_random(size, device=DEVICE)
    # bert-base-uncased has 30,522 pieces (+ [DEC] at load time), as many as the Q-Former's embeddings
    vocab_file = tokenizers / "bert" / "vocab.txt"
    vocab = vocab_file.read_text().splitlines()
    rows = model.visual_tokenizer.qformer.embeddings.word_embeddings.weight.shape[0] - 1
    vocab_file.write_text("\n".join(vocab + [f"[unused{i}]" for i in range(rows - len(vocab))]) + "\n")
    lavis = work / "LAVIS"
    lavis.mkdir(parents=True, exist_ok=True)
    tower, qformer = lavis / "eva_vit_g.pth", lavis / "instruct_blip_vicuna7b_trimmed.pth"
    torch.save({k: v.cpu() for k, v in lavis_vision_state(model).items()}, tower)
    torch.save({"model": {k: v.cpu() for k, v in lavis_qformer_state(model).items()}}, qformer)
    checkpoint = save_released(
        model,
        work / f"llama-vid-{size}-random",
        vision_tower_path=str(tower),
        safetensors=True,
        tokenizer_from=tokenizers / "llm",
    )
    del model
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return checkpoint, tower, qformer, tokenizers / "bert"


def write_judge(work: Path, size: str) -> Path:
    folder = work / f"judge-llama3-{size}-random"
    tok = build_tokenizer(folder)
    model = build_judge(tok, device=DEVICE, size="tiny" if size == "tiny" else "8b")
    model.save_pretrained(folder)
    del model
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return folder


def set_up(args: argparse.Namespace, work: Path) -> tuple[dict, dict[str, float]]:
    """Data, video model and judge on disk, each part timed. The videos come first, encoded by one
    process per core before this process touches the GPU (forking beside a thread that drives the
    GPU hung a run on the H200)."""
    seconds: dict[str, float] = {}

    def timed(part: str, write):
        start = time.perf_counter()
        out = write()
        seconds[part] = time.perf_counter() - start
        print(f"set-up: {part} {seconds[part]:.1f}", flush=True)
        return out

    counts = questions_per_video(args.videos, args.questions, args.total_questions)
    data = {"data": timed("videos_and_dataset_s", lambda: write_dataset(work, counts, args.seconds))}
    names = ("checkpoint", "tower", "qformer", "bert")
    data.update(zip(names, timed("video_model_s", lambda: write_video_model(work, args.size)), strict=True))
    data["judge"] = timed("judge_model_s", lambda: write_judge(work, args.size))
    seconds["setup_s"] = sum(seconds.values())
    return data, seconds


class PhaseTimer:
    """Wraps methods so that the seconds spent inside them add up per phase (outermost call only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner: object, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.seconds[phase] += time.perf_counter() - start
                self.calls[phase] += 1

        if hasattr(original, "cache_clear"):  # functools.lru_cache'd functions keep their interface
            timed.cache_clear = original.cache_clear
        setattr(owner, name, timed)


def run_lmms_eval(args: argparse.Namespace, paths: dict, out: Path) -> dict:
    """``lmms-eval`` in this process with the phase timers installed; returns the timings."""
    from lmms_eval.__main__ import cli_evaluate

    import llamavid_eval.judges.backends.hf as hf
    from llamavid_eval.model import lmms_backend

    os.environ.update(
        LLAMAVID_DATA_ROOT=str(paths["data"]),
        LLAMAVID_JUDGE="hf",
        LLAMAVID_JUDGE_MODEL=str(paths["judge"]),
        LLAMAVID_JUDGE_BATCH_SIZE=str(args.judge_batch_size),
        LLAMAVID_JUDGE_PARSE_RETRIES="0",
        LLAMAVID_JUDGE_CACHE="off",
        # a random judge cannot pass the judge exam (its verdicts mean nothing); only its speed counts
        LLAMAVID_JUDGE_EXAM="0",
    )
    timer = PhaseTimer()
    timer.wrap(lmms_backend.LlamaVid, "__init__", "load video model")
    timer.wrap(lmms_backend.LlamaVid, "generate_until", "answer")
    timer.wrap(hf, "_load_pretrained", "load judge")
    timer.wrap(hf.HFJudge, "judge_many", "judge with its loading")
    model_args = (
        f"pretrained={paths['checkpoint']},vision_tower={paths['tower']},qformer={paths['qformer']},"
        f"qformer_tokenizer={paths['bert']},dtype={'bf16' if DEVICE == 'cuda' else 'auto'},compile=True"
    )
    argv = [
        "lmms-eval",
        "--model",
        "llamavid",
        "--model_args",
        model_args,
        "--tasks",
        "msvd_qa",
        "--batch_size",
        str(args.batch_size),
        "--gen_kwargs",
        f"max_new_tokens={args.answer_tokens}",
        "--output_path",
        str(out),
    ]
    own_argv, sys.argv = sys.argv, argv
    start = time.perf_counter()
    try:
        cli_evaluate()
    finally:
        sys.argv = own_argv  # the record names this script's command
    wall = time.perf_counter() - start
    found = list(out.rglob("*_results.json"))
    if len(found) != 1:
        raise SystemExit(f"lmms-eval wrote {len(found)} results files under {out}, expected 1 (its error is above)")
    results_file = found[0]
    metrics = json.loads(results_file.read_text())["results"]["msvd_qa"]
    results = {
        key: metrics[key] for key in ("accuracy,none", "mean_score,none", "judge_failures,none") if key in metrics
    }
    phases = dict(timer.seconds)
    phases["judge"] = phases.pop("judge with its loading", 0.0) - phases.get("load judge", 0.0)
    return {
        "lmms_eval_command": shlex.join(argv),
        "wall_s": wall,
        "phases_s": phases,
        "calls": dict(timer.calls),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=520)
    parser.add_argument("--questions", type=int, default=26, help="questions per video")
    parser.add_argument("--total-questions", type=int, help="spread this many questions over the videos instead")
    parser.add_argument("--seconds", type=int, default=10, help="video length (= frames at 1 fps)")
    parser.add_argument("--answer-tokens", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--judge-batch-size", type=int, default=512)
    parser.add_argument("--size", choices=["7b", "tiny"], default="7b", help="tiny: CPU check of the script")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="llamavid-e2e-"))
    paths, setup = set_up(args, work)
    timing = run_lmms_eval(args, paths, work / "out")
    phases = timing["phases_s"]
    questions = sum(questions_per_video(args.videos, args.questions, args.total_questions))
    report = {
        "questions": questions,
        "videos": args.videos,
        "setup (not part of the run)": setup,
        **timing,
        "other_s": timing["wall_s"] - sum(phases.values()),
        "answer_qps": questions / phases["answer"],
        "judge_per_s": questions / phases["judge"],
        "command_s": time.perf_counter() - started,
    }
    failures = int(timing["results"].get("judge_failures,none", 0) or 0)
    report["valid"] = failures == 0
    print(json.dumps(report, indent=2, default=float))
    write_record("end_to_end", report)
    if failures:
        raise SystemExit(f"{failures} of {questions} judgements failed (reason above): the timing is not a judged run")


if __name__ == "__main__":
    main()
