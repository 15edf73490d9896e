"""Where the host thread of a ``throughput.py`` run spends its wall time, sampled from outside.

``timeline.py`` reads torch.profiler's trace, whose own host overhead inflates host times, and
removing GPU work or host launches (CUDA graphs for the prefill, the tower, nine decode steps;
compiled layers) did not move questions/s. py-spy samples the process from outside, native frames
included, without instrumenting it: each sample of the main thread inside the timed
``answer_ids`` call is put under the runner stage its Python frames name, and under what the
thread was doing there - inside the CUDA driver (launching, or waiting for room or for an event),
blocked on a lock or queue, or running.

    python host_samples.py --rate 100 -- --videos 100 --questions 26 --frames 10 --batch-size 128 --decode graph --only optimized
    python host_samples.py --stacks results/stacks.txt.gz --device "NVIDIA H100 80GB HBM3" --rate 10 -- <its arguments>

The second form summarises py-spy stacks kept by an earlier run (``--keep``), e.g. after the stage
rules below were corrected.

Needs ``py-spy`` (``pip install py-spy``; it may need ptrace rights in a container). Hand-written
because py-spy gives stacks, not the runner's stages; the rules below are this runner's own names.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from record import write_record
from throughput import build_parser

#: (stage, Python function names that put a sample there), innermost stage first
STAGES = (
    ("tower", ("encode_frames",)),
    ("qformer tokenise", ("qformer_tokenizer_inputs",)),
    ("qformer", ("visual_tokens",)),
    ("prompts + splice", ("llm_inputs",)),
    ("collect (wait for answers)", ("collect",)),
    ("prefill", ("_prefill",)),
    ("decode steps", ("replay", "step")),
    ("next batch (workers' videos, assembly)", ("__next__", "assemble_batch", "prepared_batches")),
)
WAITS = ("pthread_cond", "futex", "sem_wait", "sem_timedwait", "poll", "select", "nanosleep", "sched_yield")
FRAME = re.compile(r"^(?P<name>.+?) \((?P<where>[^()]*)\)$")


def timed_call_line(script: Path) -> int:
    """Line of throughput.py's timed ``answer_ids`` call (the warm-up call is not counted)."""
    for number, line in enumerate(script.read_text().splitlines(), start=1):
        if "fast_runner.answer_ids(questions" in line:
            return number
    raise SystemExit(f"{script}: no timed answer_ids call found; update host_samples.timed_call_line")


def classify(frames: list[str]) -> tuple[str, str]:
    """(runner stage, what the thread did) of one main-thread stack, outermost frame first."""
    parsed = [FRAME.match(frame) for frame in frames]
    # py-spy names methods ``Class.method`` (``CUDAGraph.replay``); the stages list bare names
    python = [
        m["name"].rsplit(".", 1)[-1] for m in parsed if m and (".py:" in m["where"] or m["where"].startswith("<"))
    ]
    stage = next((name for name, functions in STAGES if any(f in python for f in functions)), "other")
    native = [m["where"] + " " + m["name"] for m in parsed if m and ".so" in m["where"]]
    if any(where.startswith("libcuda.so") for where in native):
        activity = "in CUDA driver"
    elif any(any(w in frame for w in WAITS) for frame in native[-4:]):
        activity = "blocked (lock, queue, sleep)"
    else:
        activity = "running"
    return stage, activity


def summarise(raw: Path, line: int, rate: float, batches: int) -> dict:
    """Main-thread samples of the timed call, by stage and activity, as ms per batch."""
    counts: Counter[tuple[str, str]] = Counter()
    threads: Counter[str] = Counter()
    marker = f"(throughput.py:{line})"
    text = gzip.decompress(raw.read_bytes()).decode() if raw.suffix == ".gz" else raw.read_text()
    for entry in text.splitlines():
        stack, _, count = entry.rpartition(" ")
        frames = stack.split(";")
        if marker not in stack:  # other threads, and the main thread before and after the timed call
            threads[f"{frames[0]}: {classify(frames[1:])[1]}"] += int(count)
            continue
        counts[classify(frames[1:])] += int(count)
    total = sum(counts.values())
    if not total:
        raise SystemExit(f"{raw}: no sample inside the timed call; did py-spy attach (ptrace rights)?")
    per_batch = 1e3 / rate / batches
    stages = {}
    for (stage, activity), count in sorted(counts.items()):
        stages.setdefault(stage, {"ms_per_batch": 0.0})
        stages[stage][activity] = count * per_batch
        stages[stage]["ms_per_batch"] += count * per_batch
    return {
        "samples_in_timed_call": total,
        "timed_call_s": total / rate,
        "ms_per_batch_total": total * per_batch,
        "stages": stages,
        "samples_outside_timed_call": dict(threads.most_common(12)),
    }


def sample(script: Path, forwarded: list[str], rate: int) -> Path:
    """Run throughput.py under py-spy; the raw stacks file it wrote."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = Path(tempfile.mkdtemp(prefix="host-samples-")) / "stacks.txt"
    sampler = [py_spy, "record", "--threads", "--native", "--idle", "--rate", str(rate), "--format", "raw"]
    child = subprocess.run([*sampler, "-o", str(raw), "--", sys.executable, str(script), *forwarded], check=False)
    if child.returncode or not raw.exists():
        raise SystemExit(f"py-spy or throughput.py failed (exit {child.returncode}); see the output above")
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=100, help="samples per second (py-spy takes whole numbers)")
    parser.add_argument("--keep", type=Path, help="also copy py-spy's raw stacks here")
    parser.add_argument("--stacks", type=Path, help="summarise these kept stacks (.txt or .txt.gz) instead of running")
    parser.add_argument("--device", help="with --stacks: the GPU they were sampled on (as their run's record names it)")
    parser.add_argument("throughput_args", nargs=argparse.REMAINDER, help="-- then throughput.py's arguments")
    args = parser.parse_args()
    if args.stacks and not args.device:
        parser.error("--stacks needs --device: the GPU the stacks were sampled on (see their run's record)")
    forwarded = [a for a in args.throughput_args if a != "--"]
    script = Path(__file__).with_name("throughput.py")
    raw = args.stacks or sample(script, forwarded, args.rate)
    if args.keep and not args.stacks:
        shutil.copy(raw, args.keep)
    parsed = build_parser().parse_args(forwarded)
    batches = math.ceil(parsed.videos * parsed.questions / parsed.batch_size)
    summary = summarise(raw, timed_call_line(script), args.rate, batches)
    print(json.dumps(summary, indent=1, default=float))
    print(f"| stage | ms per batch ({batches} batches) | in CUDA driver | blocked | running |\n|---|---|---|---|---|")
    for stage, row in sorted(summary["stages"].items(), key=lambda item: -item[1]["ms_per_batch"]):
        cells = [row.get(k, 0.0) for k in ("ms_per_batch", "in CUDA driver", "blocked (lock, queue, sleep)", "running")]
        print(f"| {stage} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    source = {"stacks": str(args.stacks)} if args.stacks else {}
    write_record(
        "host_samples",
        {"throughput_arguments": forwarded, "rate": args.rate, "batches": batches, **source, **summary},
        device=args.device if args.stacks else None,
    )


if __name__ == "__main__":
    main()
