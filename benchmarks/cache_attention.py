"""One attention layer at the static loop's real shapes: the Triton cache kernel against what it
replaces (SDPA's masked kernel in the prefill, the grouped products in the decode steps), for the
video model's Vicuna-7B (32 heads) and the 8B judge's Llama-3 (32 query heads on 8 key/value heads).

Cache as the loop makes it: ``--prefix`` shared slots, then each row's tokens left padded, slots
rounded up to a bucket; decode: one query per row; prefill: ``--new`` queries, causal. Prints the
median milliseconds per call (``triton.testing.do_bench``) and the largest difference from fp64
eager attention, for both of the kernel's paths (stacked queries summed on the CUDA cores, "few",
or multiplied on the tensor cores, "dot"), block sizes, warps and pipelining stages, and for the
settings the kernel ships with (``kernel_shipped``); writes a record.

    python benchmarks/cache_attention.py --rows 512 --models vicuna7b
"""

from __future__ import annotations

import argparse
import itertools

import torch
import triton.testing
from record import write_record
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from llamavid_eval.generation import cache_attention as kernel_module
from llamavid_eval.generation.attention import grouped_attention

SHAPES = {"vicuna7b": (32, 32), "llama3_8b": (32, 8)}  # query heads, key/value heads; head size 128
FEW_QUERIES_MAX = kernel_module.FEW_QUERIES_MAX  # the sweep below changes the module's settings
SHIPPED = (kernel_module.FEW_QUERIES, kernel_module.MANY_QUERIES, FEW_QUERIES_MAX)


class _Heads(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups, self.training, self.is_causal = groups, False, False


def layer_inputs(rows: int, heads: int, kv_heads: int, queries: int, prefix: int, new: int, slots: int):
    """Query, key, value and boolean mask of one layer: row ``r`` has ``r % 8`` padding slots after the prefix."""
    query = torch.randn(rows, queries, heads, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    key = torch.randn(rows, kv_heads, slots, 128, device="cuda", dtype=torch.bfloat16)
    value = torch.randn_like(key)
    key[:, :, :prefix], value[:, :, :prefix] = key[:1, :, :prefix], value[:1, :, :prefix]
    written = prefix + new + (queries if queries == 1 else 0)
    slot = torch.arange(slots, device="cuda")
    padding = (torch.arange(rows, device="cuda") % 8)[:, None]
    valid = (slot < written) & ~((slot >= prefix) & (slot < prefix + padding))
    if queries == 1:
        mask = valid[:, None, None, :]
    else:  # causal over the new tokens, which sit at the slots before written
        at = torch.arange(written - queries, written, device="cuda")
        mask = (valid[:, None, :] & (slot <= at[:, None]))[:, None] | (slot == at[:, None])
    return query, key, value, mask


def additive(mask: torch.Tensor) -> torch.Tensor:
    return torch.zeros(mask.shape, dtype=torch.bfloat16, device="cuda").masked_fill_(
        ~mask, torch.finfo(torch.bfloat16).min
    )


def exact(module, query, key, value, mask) -> torch.Tensor:
    out, _ = grouped_attention(module, query.double(), key.double(), value.double(),
                               torch.zeros(mask.shape, dtype=torch.float64, device="cuda").masked_fill_(~mask, -torch.inf),
                               scaling=128**-0.5)  # fmt: skip
    return out


def measure(name: str, heads: int, kv_heads: int, queries: int, args) -> dict[str, float]:
    """Milliseconds of each implementation for one layer, and the kernel's largest error; printed as
    they are measured, so that a run stopped by its time limit leaves what it had in the log."""
    query, key, value, mask = layer_inputs(args.rows, heads, kv_heads, queries, args.prefix, args.new, args.slots)
    module, scale = _Heads(heads // kv_heads), 128**-0.5
    shared = torch.tensor(args.prefix, dtype=torch.int32, device="cuda")
    bias = additive(mask)
    reference = exact(module, query, key, value, mask)
    figures: dict[str, float] = {}

    def time(label: str, run) -> None:
        figures[f"{label}_ms"] = triton.testing.do_bench(run)
        print(f"{name:24s} {label + '_ms':32s} {figures[label + '_ms']:10.4f}", flush=True)

    def time_kernel(label: str) -> None:
        run = lambda: kernel_module.cache_attention(module, query, key, value, mask, scale, shared_prefix=shared)  # noqa: E731
        time(label, run)
        figures[f"{label}_max_error"] = (run()[0].double() - reference).abs().max().item()

    time("grouped", lambda: grouped_attention(module, query, key, value, bias, scale))
    time("sdpa", lambda: sdpa_attention_forward(module, query, key, value, mask, scaling=scale))
    time_kernel("kernel_shipped")  # the module's own settings
    paths = ("few", "dot") if heads // kv_heads * queries <= FEW_QUERIES_MAX else ("dot",)
    for path, block, warps, stages in itertools.product(paths, (16, 32, 64), (1, 2, 4), (1, 2)) if args.sweep else ():
        launch = kernel_module.LaunchConfig(block, warps, stages)
        kernel_module.FEW_QUERIES = kernel_module.MANY_QUERIES = launch
        kernel_module.FEW_QUERIES_MAX = FEW_QUERIES_MAX if path == "few" else 0
        time_kernel(f"kernel_{path}_b{block}_w{warps}_s{stages}")
        kernel_module.FEW_QUERIES, kernel_module.MANY_QUERIES, kernel_module.FEW_QUERIES_MAX = SHIPPED
    return {f"{name}_{label}": value_ for label, value_ in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--prefix", type=int, default=32, help="shared prompt slots")
    parser.add_argument("--new", type=int, default=28, help="each row's own prompt tokens (prefill queries)")
    parser.add_argument("--slots", type=int, default=72, help="static cache length")
    parser.add_argument("--models", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--no-sweep", dest="sweep", action="store_false",
                        help="time the shipped settings only (the sweep takes ~3 min per model on an H100)")  # fmt: skip
    args = parser.parse_args()
    figures = {"rows": args.rows, "prefix": args.prefix, "new": args.new, "slots": args.slots}
    for model in args.models:
        heads, kv_heads = SHAPES[model]
        figures |= measure(f"{model}_decode", heads, kv_heads, 1, args)
        figures |= measure(f"{model}_prefill", heads, kv_heads, args.new, args)
    write_record("cache_attention", figures)


if __name__ == "__main__":
    main()
