"""Where a whole run's wall time goes: GPU busy vs idle, per runner stage, from one profiler trace.

``stages.py`` times each stage alone; this runs ``LlamaVidRunner.answer_ids`` on real MP4s exactly
as ``throughput.py`` does, under ``torch.profiler`` (CPU + CUDA), and reads the trace back:

- per named range of the runner (``llamavid.*``, ``generation.*``): host ms per batch, and GPU ms
  per batch of the kernels launched inside it (by the profiler's launch/kernel correlation ids);
- the GPU's idle time (gaps between kernels, the union of all streams), and for each gap the range
  the host was in when the GPU ran dry: what the GPU was waiting for.

    python benchmarks/timeline.py --videos 30 --trace /tmp/timeline.json.gz
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import shutil
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import torch
from record import write_record
from throughput import (
    add_batch_arguments,
    make_questions,
    random_loaded,
    runner_options,
    write_tokenizers,
    write_videos,
)

from llamavid_eval.model.inference import LlamaVidRunner

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
RANGE_PREFIXES = ("llamavid.", "generation.")


def innermost(ranges: list[dict], starts: list[float], t: float) -> str:
    """Name of the latest-starting range that contains host time ``t`` (``-`` if none)."""
    for index in range(bisect.bisect_right(starts, t) - 1, -1, -1):
        r = ranges[index]
        if r["ts"] <= t <= r["ts"] + r["dur"]:
            return r["name"]
    return "-"


def analyse(trace: dict, batches: int, min_gap_us: float) -> dict:
    events = trace["traceEvents"]
    ranges = sorted(
        (e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith(RANGE_PREFIXES)),
        key=lambda e: e["ts"],
    )
    starts = [r["ts"] for r in ranges]
    launch_ts = {
        e["args"]["correlation"]: e["ts"]
        for e in events
        if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})
    }
    kernels = sorted((e for e in events if e.get("cat") in GPU_CATEGORIES), key=lambda e: e["ts"])
    host_ms: dict[str, float] = defaultdict(float)
    for r in ranges:
        host_ms[r["name"]] += r["dur"] / 1e3
    gpu_ms: dict[str, float] = defaultdict(float)
    for k in kernels:
        launched = launch_ts.get(k.get("args", {}).get("correlation"))
        gpu_ms[innermost(ranges, starts, launched) if launched is not None else "-"] += k["dur"] / 1e3
    # union of kernel intervals; a gap is GPU idle time, charged to the host's range at its start
    idle_ms: dict[str, float] = defaultdict(float)
    gaps = []
    busy_us, end = 0.0, kernels[0]["ts"]
    for k in kernels:
        if k["ts"] > end:
            gap = k["ts"] - end
            if gap >= min_gap_us:
                idle_ms[innermost(ranges, starts, end)] += gap / 1e3
                gaps.append((gap / 1e3, innermost(ranges, starts, end), k["name"][:60]))
            busy_us += k["dur"]
            end = k["ts"] + k["dur"]
        elif k["ts"] + k["dur"] > end:
            busy_us += k["ts"] + k["dur"] - end
            end = k["ts"] + k["dur"]
    window_ms = (end - min(ranges[0]["ts"], kernels[0]["ts"])) / 1e3
    return {
        "window_ms": window_ms,
        "gpu_busy_ms": busy_us / 1e3,
        "batches": batches,
        "stages": {
            name: {
                "host_ms_per_batch": host_ms.get(name, 0.0) / batches,
                "gpu_ms_per_batch": gpu_ms.get(name, 0.0) / batches,
                "gpu_idle_ms_per_batch": idle_ms.get(name, 0.0) / batches,
            }
            for name in sorted(set(host_ms) | set(gpu_ms) | set(idle_ms))
        },  # fmt: skip
        "largest_gaps": sorted(gaps, reverse=True)[:15],
    }


def sync_sites(runner: LlamaVidRunner, questions: list) -> Counter:
    """Each place where the host waited for the GPU during a run (torch's sync debug mode), with
    how often: a wait inside the pipeline leaves the GPU idle while the host catches up."""
    sites: Counter = Counter()

    def note(*_: object, **__: object) -> None:
        frames = [f for f in traceback.extract_stack()[:-2] if "warnings" not in f.filename]
        ours = [f for f in frames if "site-packages/torch" not in f.filename]
        sites[" <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(ours[-6:]))] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = note
        torch.cuda.set_sync_debug_mode("warn")
        try:
            runner.answer_ids(questions)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sites


def print_report(report: dict, questions: int, wall_s: float) -> None:
    busy, window = report["gpu_busy_ms"], report["window_ms"]
    print(f"\n{questions} questions in {report['batches']} batches, {wall_s:.2f} s under the profiler "
          f"({questions / wall_s:.1f} q/s); GPU busy {busy:.0f} of {window:.0f} ms ({100 * busy / window:.1f}%)")  # fmt: skip
    print(
        "\n| range (host) | host ms / batch | GPU ms / batch (kernels launched in it) | GPU idle ms / batch (host was here) |"
    )
    print("|---|---|---|---|")
    for name, row in report["stages"].items():
        print(
            f"| {name} | {row['host_ms_per_batch']:.1f} | {row['gpu_ms_per_batch']:.1f} | {row['gpu_idle_ms_per_batch']:.1f} |"
        )
    print("\nlargest GPU idle gaps (ms, host range at the gap's start, next kernel):")
    for gap, where, kernel in report["largest_gaps"]:
        print(f"  {gap:7.2f}  {where:28s} {kernel}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_arguments(parser)
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--min-gap-us", type=float, default=20.0, help="shorter gaps are not counted as idle")
    parser.add_argument("--trace", type=Path, help="also keep the trace here (.json.gz)")
    parser.add_argument("--decode", default="graph", help="graph or eager (see throughput.py)")
    parser.add_argument("--sync-debug", action="store_true", help="also list where the host waited for the GPU")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llamavid-timeline-"))
    tokenizers = write_tokenizers(work / "tokenizers")
    videos = write_videos(work, args.videos, args.frames)
    loaded = random_loaded(tokenizers, work, device="cuda")
    runner = LlamaVidRunner(loaded, batch_size=args.batch_size, **runner_options(args.decode))
    runner.answer_ids(make_questions(videos[:5], args.questions, args.answer_tokens, shared=True))  # graphs, compiles
    questions = make_questions(videos, args.questions, args.answer_tokens, shared=True)
    syncs = sync_sites(runner, questions) if args.sync_debug else Counter()
    for site, count in syncs.most_common():
        print(f"host waited for the GPU {count}x at {site}")
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        runner.answer_ids(questions)
        torch.cuda.synchronize()
        wall_s = time.perf_counter() - start
    raw = work / "trace.json"
    prof.export_chrome_trace(str(raw))
    trace = json.loads(raw.read_text())
    batches = -(-len(questions) // args.batch_size)
    report = analyse(trace, batches, args.min_gap_us)
    print(json.dumps({k: v for k, v in report.items() if k != "largest_gaps"}))
    print_report(report, len(questions), wall_s)
    write_record(
        "timeline",
        {
            "arguments": {**vars(args), "trace": str(args.trace)},
            "questions": len(questions),
            "wall_s": wall_s,
            "qps": len(questions) / wall_s,
            "host_waits": dict(syncs),
            **report,
        },
    )
    if args.trace:
        with raw.open("rb") as source, gzip.open(args.trace, "wb") as target:
            shutil.copyfileobj(source, target)


if __name__ == "__main__":
    main()
