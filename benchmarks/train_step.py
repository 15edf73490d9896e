"""Training-step cost at real 7B size: LoRA vs full fine-tuning, gradient checkpointing on, bf16.

Random weights (compute does not depend on values). Per step: a batch of video QA conversations
(``--frames`` frames each -> 2 visual tokens per frame, ``--text-tokens`` text tokens), forward +
backward through ``forward_multimodal`` and an AdamW step over the trainable parameters - with the
model set up by ``training.build_random_model``, i.e. exactly as ``training.train`` trains it.

    python benchmarks/train_step.py --batch 4 --frames 10 --text-tokens 256 --steps 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from record import write_record

from llamavid_eval.core.tokens import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llamavid_eval.training import TrainConfig, build_random_model
from llamavid_eval.training.params import module_base


def make_batch(args: argparse.Namespace, device: torch.device, vocab: int) -> dict:
    """Random frames and token ids with one ``<image>`` at position 1 and answers in the last quarter."""
    ids, labels = [], []
    for _ in range(args.batch):
        row = torch.randint(3, vocab, (args.text_tokens,), device=device)
        row[0], row[1] = 1, IMAGE_TOKEN_INDEX
        label = torch.full_like(row, IGNORE_INDEX)
        label[-args.text_tokens // 4 :] = row[-args.text_tokens // 4 :]
        ids.append(row)
        labels.append(label)
    return {
        "pixel_values": torch.randn(args.batch * args.frames, 3, 224, 224, device=device, dtype=torch.bfloat16),
        "segments": [(i * args.frames, args.frames) for i in range(args.batch)],
        "qformer_input_ids": torch.randint(1000, 2000, (args.batch, 16), device=device),
        "qformer_attention_mask": torch.ones(args.batch, 16, dtype=torch.long, device=device),
        "input_ids": ids,
        "labels": labels,
    }


def run(method: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Time optimizer steps of the model exactly as ``training.train`` sets it up for ``method``."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    config = TrainConfig(
        train_data="unused",
        method=method,
        lora_rank=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        gradient_checkpointing=True,
    )
    module = build_random_model("7b", config=config, device=device, dtype=torch.bfloat16)
    trainable = [p for p in module.parameters() if p.requires_grad]
    row = {"method": method, "trainable_params_m": sum(p.numel() for p in trainable) / 1e6}
    try:
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, fused=True)
        batch = make_batch(args, device, module_base(module).config.vocab_size)
        tokens = args.batch * (args.text_tokens - 1 + args.frames * 2)
        times = []
        for _ in range(args.steps + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):  # what mixed_precision=bf16 does in train
                loss = module(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        step_s = sum(times[1:]) / args.steps
        row.update(
            step_s=step_s,
            tokens_per_s=tokens / step_s,
            loss=float(loss),
            peak_gib=torch.cuda.max_memory_allocated(device) / 2**30,
        )
    except torch.OutOfMemoryError:
        row.update(
            error="out of memory (AdamW states for all weights; the original recipe uses "
            "DeepSpeed ZeRO-2 with CPU offload)",
            peak_gib=torch.cuda.max_memory_allocated(device) / 2**30,
        )
    del module
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="per-device batch of the original recipe")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--text-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lora-rank", type=int, default=128)
    parser.add_argument("--methods", default="lora,full")
    args = parser.parse_args()
    device = torch.device("cuda")
    rows = [run(method, args, device) for method in args.methods.split(",")]
    print(json.dumps({"device": torch.cuda.get_device_name(device), "args": vars(args), "rows": rows}))
    write_record("train_step", {"arguments": vars(args), "rows": rows})
    print("| method | trainable (M) | step (s) | tokens/s | peak GiB | note |\n|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['trainable_params_m']:.0f} | {row.get('step_s', float('nan')):.2f} | "
            f"{row.get('tokens_per_s', float('nan')):.0f} | {row['peak_gib']:.1f} | {row.get('error', '')} |"
        )


if __name__ == "__main__":
    main()
