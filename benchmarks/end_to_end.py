"""One judged MSVD-QA-shaped evaluation through the real ``lmms-eval --model llamavid --tasks msvd_qa``.

Everything a user's run has, at full size, in the released on-disk layouts: synthetic MP4 videos
prepared with ``llamavid prepare msvd_qa`` into a data root; a random-weight LLaMA-VID 7B written
as a released checkpoint (safetensors shards + LAVIS EVA-ViT-G and Q-Former files + tokenizers);
the in-process ``hf`` judge loading an 8B Llama-3-shaped random judge from disk whose replies are
a 12-token verdict (``random_judge.py``), re-asks and the verdict cache off. Answers are 10 tokens
(``--gen_kwargs max_new_tokens=10``; a random model rarely emits eos). lmms-eval runs in this
process (its own command-line entry point) so that the phases can be timed: loading the video
model, answering (``generate_until``), loading the judge, judging, and the rest (task building,
dataset loading, writing results). The per-question phases are extrapolated to the 13,157
questions of the MSVD-QA test split.

    python benchmarks/end_to_end.py --videos 100 --questions 26
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from llamavid_eval.model.random_init import build_random  # noqa: E402
from llamavid_eval.model.saving import save_released  # noqa: E402
from llamavid_eval.model.tiny import lavis_qformer_state, lavis_vision_state  # noqa: E402
from random_judge import WORDS, build_judge, build_tokenizer  # noqa: E402
from throughput import write_tokenizers, write_videos  # noqa: E402

MSVD_TEST_QUESTIONS = 13157
STARTS = ("what is the", "who is", "where is the", "how many", "what does the")


def write_dataset(work: Path, videos: int, questions: int, seconds: int) -> Path:
    """Videos + an MSVD-style QA file, prepared with the real command into ``work/data``."""
    paths = write_videos(work, videos, seconds)
    rng = random.Random(0)
    rows = [
        {
            "video_id": path.stem,
            "id": len(paths) * q + i,
            "answer": rng.choice(WORDS),
            "question": f"{rng.choice(STARTS)} {' '.join(rng.choices(WORDS, k=rng.randint(1, 3)))}?",
        }
        for i, path in enumerate(paths)
        for q in range(questions)
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
    subprocess.run(command, check=True)
    return work / "data"


def write_video_model(work: Path) -> tuple[Path, Path, Path, Path]:
    """Random 7B LLaMA-VID in the released layout: checkpoint, EVA-ViT-G file, Q-Former file, BERT tokenizer."""
    tokenizers = write_tokenizers(work / "tokenizers")
    model = build_random("7b")
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
        work / "llama-vid-7b-random",
        vision_tower_path=str(tower),
        safetensors=True,
        tokenizer_from=tokenizers / "llm",
    )
    del model
    torch.cuda.empty_cache()
    return checkpoint, tower, qformer, tokenizers / "bert"


def write_judge(work: Path) -> Path:
    folder = work / "judge-llama3-8b-random"
    tok = build_tokenizer(folder)
    model = build_judge(tok)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


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


def run_lmms_eval(
    args: argparse.Namespace,
    checkpoint: Path,
    tower: Path,
    qformer: Path,
    bert: Path,
    judge: Path,
    data: Path,
    out: Path,
) -> dict:
    """``lmms-eval`` in this process with the phase timers installed; returns the timings."""
    import llamavid_eval.judges.backends.hf as hf
    from llamavid_eval.model import lmms_backend
    from lmms_eval.__main__ import cli_evaluate

    os.environ.update(
        LLAMAVID_DATA_ROOT=str(data),
        LLAMAVID_JUDGE="hf",
        LLAMAVID_JUDGE_MODEL=str(judge),
        LLAMAVID_JUDGE_BATCH_SIZE=str(args.judge_batch_size),
        LLAMAVID_JUDGE_PARSE_RETRIES="0",
        LLAMAVID_JUDGE_CACHE="off",
    )
    timer = PhaseTimer()
    timer.wrap(lmms_backend.LlamaVid, "__init__", "load video model")
    timer.wrap(lmms_backend.LlamaVid, "generate_until", "answer")
    timer.wrap(hf, "_load_pretrained", "load judge")
    timer.wrap(hf.HFJudge, "_complete", "judge")
    model_args = (
        f"pretrained={checkpoint},vision_tower={tower},qformer={qformer},qformer_tokenizer={bert},"
        "dtype=bf16,compile=True"
    )
    sys.argv = [
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
    start = time.perf_counter()
    cli_evaluate()
    wall = time.perf_counter() - start
    (results_file,) = out.rglob("*_results.json")
    metrics = json.loads(results_file.read_text())["results"]["msvd_qa"]
    results = {
        key: metrics[key] for key in ("accuracy,none", "mean_score,none", "judge_failures,none") if key in metrics
    }
    return {"wall_s": wall, "phases_s": dict(timer.seconds), "calls": dict(timer.calls), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--questions", type=int, default=26, help="questions per video")
    parser.add_argument("--seconds", type=int, default=10, help="video length (= frames at 1 fps)")
    parser.add_argument("--answer-tokens", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--judge-batch-size", type=int, default=256)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="llamavid-e2e-"))
    setup = time.perf_counter()
    data = write_dataset(work, args.videos, args.questions, args.seconds)
    checkpoint, tower, qformer, bert = write_video_model(work)
    judge = write_judge(work)
    setup_s = time.perf_counter() - setup
    timing = run_lmms_eval(args, checkpoint, tower, qformer, bert, judge, data, work / "out")

    questions = args.videos * args.questions
    phases = timing["phases_s"]
    loads = phases.get("load video model", 0.0) + phases.get("load judge", 0.0)
    # everything but loading is taken to grow with the question count (an upper bound: part of
    # lmms-eval's own work - task building, writing results - is fixed)
    scaled = timing["wall_s"] - loads
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "questions": questions,
        "setup_s (not part of the run)": setup_s,
        **timing,
        "other_s": scaled - phases.get("answer", 0.0) - phases.get("judge", 0.0),
        "answer_qps": questions / phases["answer"],
        "judge_per_s": questions / phases["judge"],
        "extrapolated_13157_s": loads + scaled * MSVD_TEST_QUESTIONS / questions,
    }
    print(json.dumps(report, indent=2, default=float))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
