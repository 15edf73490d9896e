"""Where one batch of the in-process judge spends its time, on its default (constrained) path:
host work (rendering + tokenising the prompts into frames), the batch's prefill and its extension
(``judge.prefill`` / ``judge.extend``: wall ms, GPU ms), the top CUDA kernels (``torch.profiler``), and
a plain ``lm(input_ids)`` forward over the same tokens without the shared-prefix cache (what
transformers alone does with the same rows: the floor the prefill is compared with).

Same judge and requests as ``judge_throughput.py``.

    python benchmarks/profile_judge.py --batch-size 256
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
from record import write_record  # noqa: E402

from llamavid_eval.generation.attention import grouped_attention_for  # noqa: E402
from llamavid_eval.judges.backends import constrained  # noqa: E402
from llamavid_eval.judges.backends.hf import HFJudge, _shared_length  # noqa: E402
from llamavid_eval.judges.prompt import build_messages  # noqa: E402


def wall_ms(fn, repeats: int) -> float:
    """Mean wall milliseconds of ``fn()``, the GPU drained before and after."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3 / repeats


def ranges_ms(fn) -> dict[str, dict[str, float]]:
    """Host and GPU ms of the ``judge.*`` profiler ranges of one ``fn()``."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as prof:
        fn()
        torch.cuda.synchronize()
    out = {}
    for event in prof.key_averages():
        if event.key.startswith("judge."):
            entry = out.setdefault(event.key, {"host_ms": 0.0, "gpu_ms": 0.0})
            if event.device_type == torch.autograd.DeviceType.CUDA:
                entry["gpu_ms"] += event.device_time_total / 1e3
            else:
                entry["host_ms"] += event.cpu_time_total / 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tok = build_tokenizer(Path(tempfile.mkdtemp(prefix="judge-tok-")))
    lm = build_judge(tok)
    judge = HFJudge.with_model("random-llama3-8b", tok, lm, batch_size=args.batch_size, parse_retries=0)
    conversations = [build_messages(r) for r in requests(args.batch_size)]
    start = time.perf_counter()
    frames = constrained.frames(tok, [judge._render(tok, messages) for messages in conversations])
    host_ms = (time.perf_counter() - start) * 1e3
    prompts = [frame.prefix for frame in frames]
    shared = _shared_length(prompts)
    prefix = judge._prefix_kv(lm, tuple(prompts[0][:shared]))
    config = judge._fused(lm).config

    def one_batch() -> list:
        with grouped_attention_for(config):
            return constrained.choose(lm, frames, tok.pad_token_id, shared, prefix)

    width = max(map(len, prompts))
    plain_ids = torch.randint(100, 2000, (args.batch_size, width), device="cuda")

    def plain() -> None:  # every token of every row, no prefix cache, the model's own attention (sdpa)
        with torch.inference_mode():
            lm(input_ids=plain_ids, logits_to_keep=1)

    figures = {
        "batch_size": args.batch_size,
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "shared_tokens": shared,
        "host_frames_ms": host_ms,
        "choose_wall_ms": wall_ms(one_batch, args.repeats),
        "plain_forward_all_tokens_ms": wall_ms(plain, args.repeats),
        "ranges": ranges_ms(one_batch),
    }
    figures["judgements_per_s_gpu_part"] = args.batch_size / figures["choose_wall_ms"] * 1e3
    print(figures, flush=True)
    kernels(f"constrained judge batch of {args.batch_size}", one_batch, repeats=1, rows=25)
    write_record("profile_judge", figures)


if __name__ == "__main__":
    main()
