"""The embedded default: the whole pipeline on synthetic videos, on a CPU, in minutes.

    llamavid demo [--workdir llamavid-demo] [--train 400] [--test 100] [--epochs 10]

1. generate the synthetic dataset (real MP4s + QA records, train and test split);
2. write a tiny random LLaMA-VID in the released on-disk layout (the "zero-shot" model);
3. fine-tune it on the train split with the training module (full fine-tune);
4. evaluate both (the fine-tuned one at 1 and 0.5 fps) with the real CLI, ``lmms-eval --model llamavid --tasks llamavid_demo``, scored
   by the offline exact-match judge (labelled as such: not an LLM);
5. print the leaderboard (``llamavid results table``) and accuracy against chance.
Everything is seeded; the work folder can be deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from llamavid_eval.core.exits import run_command
from llamavid_eval.tasks.llamavid_demo.make_data import FAMILY, make_dataset
from llamavid_eval.tasks.llamavid_demo.scenes import ANSWER_SUFFIX, ANSWERS, QUESTIONS


class DemoError(RuntimeError):
    """A step of the demo failed; the message names the step, its output is printed above it."""


def step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def evaluate(
    name: str, checkpoint: Path, bert: Path, fps: float, out: Path, env: dict[str, str], limit: int | None
) -> None:
    """One real ``lmms-eval`` CLI run of the demo task (the model found through our entry point)."""
    command = [
        str(Path(sys.executable).parent / "lmms-eval"), "--model", "llamavid",
        "--model_args", f"pretrained={checkpoint},qformer_tokenizer={bert},dtype=fp32,fps={fps:g}",
        "--tasks", FAMILY, "--batch_size", "32", "--output_path", str(out / name), "--log_samples",
        "--verbosity", "WARNING",
    ]  # fmt: skip
    if limit:
        command += ["--limit", str(limit)]
    result = subprocess.run(command, env=env, text=True, capture_output=True)
    log = result.stdout + result.stderr
    # lmms-eval logs an evaluation that raised and still exits 0: look for its message too.
    if result.returncode != 0 or "Error during evaluation" in log:
        print(log[-4000:], file=sys.stderr)
        raise DemoError(f"lmms-eval failed for {name} (exit status {result.returncode}); the end of its log is above")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (0 videos or epochs would fail later, less clearly)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every step ran, 1 with ``error: <reason>`` as the last line when one failed."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args), (DemoError, FileExistsError, OSError), "llamavid demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamavid demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("llamavid-demo"))
    parser.add_argument("--train", type=positive_int, default=400, help="training videos")
    parser.add_argument("--test", type=positive_int, default=100, help="test videos")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N test questions")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> None:
    """The five steps; raises :class:`DemoError` naming the step that failed."""
    from llamavid_eval.model.tiny import write_tiny_release  # torch and transformers: not needed for --help
    from llamavid_eval.training import TrainConfig, train

    work = args.workdir.resolve()
    data_root = work / "data"
    env = {**os.environ, "LLAMAVID_DATA_ROOT": str(data_root), "LLAMAVID_JUDGE": "exact",
           "LLAMAVID_JUDGE_CACHE": "off", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    os.environ["LLAMAVID_DATA_ROOT"] = str(data_root)
    started = time.perf_counter()

    t = step(f"1/5 synthetic dataset: {args.train} train + {args.test} test videos -> {data_root / FAMILY}")
    meta = make_dataset(data_root / FAMILY, seed=args.seed, train=args.train, test=args.test)
    print(f"    done in {time.perf_counter() - t:.0f} s")

    t = step("2/5 tiny LLaMA-VID (random weights, released on-disk layout)")
    corpus = tuple(q + ANSWER_SUFFIX for q in QUESTIONS.values()) + tuple(" ".join(a) for a in ANSWERS.values())
    release = write_tiny_release(work / "base", seed=args.seed, corpus=corpus)
    print(f"    {release.checkpoint} in {time.perf_counter() - t:.0f} s")

    t = step(f"3/5 fine-tune (full, {args.epochs} epochs) with the training module")
    shutil.rmtree(work / "finetuned", ignore_errors=True)  # the demo's own run folder: a rerun trains afresh
    tuned = train(TrainConfig(
        base=str(release.checkpoint), qformer_tokenizer=str(release.bert_tokenizer),
        train_data=str(data_root / FAMILY / "train_conversations.json"), data_root=str(data_root),
        method="full", learning_rate=args.learning_rate, warmup_ratio=0.03, num_epochs=args.epochs,
        per_device_batch_size=16, gradient_accumulation_steps=1, mixed_precision="no",
        gradient_checkpointing=False, output_dir=str(work / "finetuned"), save_every=0, resume="never",
        report_to="none", seed=args.seed, save_dtype="float32", num_workers=0, log_every=50,
    ))  # fmt: skip
    named = work / "llama-vid-tiny-finetuned"  # the leaderboard names a run by its checkpoint folder
    named.unlink(missing_ok=True)
    named.symlink_to(tuned, target_is_directory=True)
    print(f"    {tuned} in {time.perf_counter() - t:.0f} s")

    t = step("4/5 evaluate with lmms-eval --model llamavid --tasks llamavid_demo (exact-match judge)")
    # fps 0.5 keeps every second frame: direction and order need the frames that go missing.
    runs = (("zero-shot", release.checkpoint, 1.0), ("fine-tuned-fps0.5", named, 0.5), ("fine-tuned", named, 1.0))
    for name, checkpoint, fps in runs:
        evaluate(name, checkpoint, release.bert_tokenizer, fps, work / "eval", env, args.limit)
        print(f"    {name} (fps {fps:g}) done")
    print(f"    in {time.perf_counter() - t:.0f} s")

    step("5/5 leaderboard")
    board = subprocess.run([sys.executable, "-m", "llamavid_eval.results", "table", str(work / "eval"), "--out",
                            str(work / "leaderboard"), "--reference", "none"], env=env, text=True,
                           capture_output=True)  # fmt: skip
    print(board.stdout or board.stderr)
    if board.returncode != 0:
        raise DemoError(f"the leaderboard step failed (exit status {board.returncode}); its output is above")
    chance = {qtype: info["chance"] for qtype, info in meta["question_types"].items()}
    tested = meta["splits"]["test"]["per_type"]
    overall = sum(chance[q] * tested[q]["questions"] for q in chance) / sum(tested[q]["questions"] for q in chance)
    per_type = json.dumps({qtype: round(level, 1) for qtype, level in chance.items()})
    print(f"chance level (uniform guess, %): overall {overall:.1f}, per type {per_type}")
    print(f"leaderboard: {work / 'leaderboard'}  |  total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
