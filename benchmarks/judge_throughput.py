"""In-process judge throughput: judgements/s of the ``hf`` backend with an 8B Llama-3-shaped judge.

The judge (``random_judge.py``) is at real size. By default its verdicts are constrained (the hf
judge's default: one batched prefill, then a short extension that scores the verdict and the
digit); ``--decoding free`` lets it write its 12-token reply, so a row stops where a real judge's
would. Requests are MSVD-QA-like (question, answer, prediction) triples, all distinct (identical
triples are judged once). Re-asks are off, the verdict cache is off. Each batch size is timed on
the same requests after an untimed warm-up batch. ``--judge-prompt`` takes a prompt file or a shipped
prompt's name, as the judge commands do: ``instructions-first`` puts the fixed reply instructions
before the item, so they join the shared prefix (``own_prompt_tokens`` in the rows tells how many
tokens per item are left to prefill).

    python benchmarks/judge_throughput.py --items 4096 --batch-sizes 256,512
    python benchmarks/judge_throughput.py --items 4096 --batch-sizes 256,512 --judge-prompt instructions-first
    python benchmarks/judge_throughput.py --size tiny --items 256 --batch-sizes 64   # CPU check
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from collector import collector_pauses  # noqa: E402
from random_judge import WORDS, build_judge, build_tokenizer  # noqa: E402
from record import write_record  # noqa: E402

from llamavid_eval.judges import JudgeRequest  # noqa: E402
from llamavid_eval.judges.backends.hf import HFJudge  # noqa: E402
from llamavid_eval.judges.prompt import load_prompt  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STARTS = ("what is the", "who is", "where is the", "how many", "what does the")


def requests(count: int, seed: int = 0) -> list[JudgeRequest]:
    """``count`` distinct MSVD-like triples (3-6 word questions, 1-word answers, 1-4 word predictions)."""
    rng = random.Random(seed)
    seen: set[tuple[str, str, str]] = set()
    while len(seen) < count:
        question = f"{rng.choice(STARTS)} {' '.join(rng.choices(WORDS, k=rng.randint(1, 3)))}?"
        seen.add((question, rng.choice(WORDS), " ".join(rng.choices(WORDS, k=rng.randint(1, 4)))))
    return [JudgeRequest(*triple) for triple in sorted(seen)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=4096)
    parser.add_argument("--batch-sizes", default="16,256,512")
    parser.add_argument("--small-batch-items", type=int, default=1024, help="items for batch sizes below 64")
    parser.add_argument("--size", choices=["8b", "tiny"], default="8b", help="tiny: CPU check of the script")
    parser.add_argument("--decoding", choices=["constrained", "free"], default="constrained")
    parser.add_argument("--judge-prompt", default="", help="prompt file or shipped name; default: the built-in")
    args = parser.parse_args()
    prompt = load_prompt(args.judge_prompt)

    tok = build_tokenizer(Path(tempfile.mkdtemp(prefix="judge-tok-")))
    lm = build_judge(tok, device=DEVICE, size=args.size)
    items = requests(args.items + 512)
    warm, timed_items = items[:512], items[512:]
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        judge = HFJudge.with_model(
            "random-llama3-8b", tok, lm, batch_size=batch_size, parse_retries=0, decoding=args.decoding, prompt=prompt
        )
        judge.judge_many(warm[: max(batch_size, 64)])
        subset = timed_items[: args.small_batch_items] if batch_size < 64 else timed_items
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with collector_pauses() as pauses:
            out = judge.judge_many(subset)
        seconds = time.perf_counter() - start
        parsed = sum(not j.failed for j in out)
        prompt_tokens = [len(judge._ids(tok, prompt.messages(r))) for r in subset[:256]]
        shared = len(judge._prefix[0]) if judge._prefix else 0
        rows.append(
            {
                "batch_size": batch_size,
                "items": len(subset),
                "seconds": seconds,
                "judgements_per_s": len(subset) / seconds,
                "parsed": f"{parsed}/{len(subset)}",
                "prompt_version": judge.prompt.version,
                "shared_prefix_tokens": shared,
                "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
                "own_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens) - shared,
                "reply": out[0].raw,
                "decoding": judge.decoding,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0,
                "gc_pauses": pauses,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"rows": rows}))
    write_record("judge_throughput", {"arguments": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
