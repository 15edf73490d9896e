"""Where one batch of the in-process judge spends its time: host work (rendering + tokenising the
prompts), the GPU part (prefill + decode steps), and the top CUDA kernels (``torch.profiler``).

Same judge and requests as ``judge_throughput.py``.

    python benchmarks/profile_judge.py --batch-size 512
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from judge_throughput import requests  # noqa: E402
from profile_batch import kernels  # noqa: E402
from random_judge import build_judge, build_tokenizer  # noqa: E402

from llamavid_eval.judges.backends.hf import HFJudge, _shared_length  # noqa: E402
from llamavid_eval.judges.prompt import build_messages  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tok = build_tokenizer(Path(tempfile.mkdtemp(prefix="judge-tok-")))
    lm = build_judge(tok)
    judge = HFJudge.with_model("random-llama3-8b", tok, lm, batch_size=args.batch_size, parse_retries=0)
    conversations = [build_messages(r) for r in requests(args.batch_size)]
    start = time.perf_counter()
    prompts = judge._encode(tok, conversations)
    host_ms = (time.perf_counter() - start) * 1e3
    shared = _shared_length(prompts)

    def one_batch() -> list[str]:
        return judge._generate(tok, lm, prompts, shared)

    one_batch()  # warm-up: prefix KV, graph capture
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.repeats):
        replies = one_batch()
    torch.cuda.synchronize()
    gpu_ms = (time.perf_counter() - start) * 1e3 / args.repeats
    print(
        f"batch {args.batch_size}: prompts {sum(map(len, prompts)) / len(prompts):.0f} tokens "
        f"({shared} shared); host render+tokenise {host_ms:.0f} ms; generate {gpu_ms:.0f} ms "
        f"-> {args.batch_size / (gpu_ms + host_ms) * 1e3:.0f} judgements/s; reply {replies[0]!r}"
    )
    kernels(f"judge batch of {args.batch_size} (prefill + decode)", one_batch, repeats=1, rows=20)


if __name__ == "__main__":
    main()
