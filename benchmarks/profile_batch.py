"""Kernel-level view of one 128-question batch: which GPU kernels the decode step, the prefill and
the Q-Former spend their time in (``torch.profiler``), and the replayed decode graph's time per step.

Same workload as ``stages.py``. Prints, per part, the top kernels by total CUDA time, and writes
them (with each part's total) to a ``profile_batch`` record.

    python benchmarks/profile_batch.py --batch-size 128
"""

from __future__ import annotations

import argparse

import torch
from record import write_record
from throughput import add_batch_arguments, one_batch_workload

from llamavid_eval.model.inference import LlamaVidRunner, generation_kwargs, prepare_batch
from llamavid_eval.model.processing import qformer_text, qformer_tokenizer_inputs


def kernels(name: str, fn, repeats: int = 3, rows: int = 12) -> dict:
    """Profile ``repeats`` calls of ``fn``; print and return its kernel time per call and top kernels."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.device_time_total for e in events) / repeats / 1e3
    print(f"\n## {name}: {total:.2f} ms of kernels per call")
    top = []
    for e in sorted(events, key=lambda e: -e.device_time_total)[:rows]:
        top.append({"ms": e.device_time_total / repeats / 1e3, "calls": e.count // repeats, "kernel": e.key[:110]})
        print(f"{top[-1]['ms']:8.2f} ms {top[-1]['calls']:5d}x  {top[-1]['kernel']}")
    return {"part": name, "kernel_ms": total, "kernel_count": sum(e.count for e in events) // repeats, "top": top}


def rewind(loop, length: int) -> None:
    """Put the cache's write position back to ``length`` (timed steps must stay inside the cache)."""
    for layer in loop.cache.layers:
        layer.cumulative_length.fill_(length)


def graph_step_ms(loop, position: int, replays: int = 20) -> float:
    """Mean time of the decode-step graph replayed from cache position ``position``, as many times as
    the static cache has room for (up to ``replays``; writing past its end is a device-side error)."""
    rewind(loop, position)
    replays = min(replays, loop.length - position - 1)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    loop.graph.replay()
    start.record()
    for _ in range(replays):
        loop.graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_batch_arguments(parser)
    args = parser.parse_args()
    loaded, _, questions, indices = one_batch_workload(args, "llamavid-profile-")
    model = loaded.model
    batch_questions = [questions[i] for i in indices]
    runner = LlamaVidRunner(loaded, batch_size=args.batch_size, compile=True)
    batch = prepare_batch(questions, indices, loaded.image_processor)
    settings = generation_kwargs(dict(batch_questions[0].generation))
    with torch.inference_mode():
        pixels = batch.pixel_values.to("cuda")
        features = model.encode_frames(pixels)
        ids, mask = qformer_tokenizer_inputs(
            loaded.qformer_tokenizer, [qformer_text(q.question) for q in batch_questions], "cuda"
        )
        inputs = runner.llm_inputs(batch_questions, runner.visual_tokens(batch_questions, batch))
        runner.generate(inputs, settings)
        (loop,) = runner.graph_decoder._states.values()
        step_ms = graph_step_ms(loop, inputs.embeds.shape[1])
        print(
            f"static cache length {loop.length}, rows {inputs.rows}, prompt {inputs.embeds.shape[1]} "
            f"(prefix {inputs.prefix_length}); graph step {step_ms:.2f} ms"
        )
        parts = [
            kernels(
                "vision tower (frames of the batch)",
                lambda: model.encode_frames(pixels, chunk_size=runner.vision_batch_size),
            ),
            kernels("Q-Former + projector", lambda: model.visual_tokens(features, batch.segments, ids, mask)),
        ]
        rewind(loop, inputs.embeds.shape[1])
        parts.append(kernels("decode step (eager run of the graph's code)", loop.step))
        padded = runner.graph_decoder._pad_rows(inputs)
        parts.append(kernels("prefill", lambda: (loop.cache.reset(), loop._prefill(padded))))
    write_record(
        "profile_batch",
        {
            "arguments": vars(args),
            "frames": int(pixels.shape[0]),
            "static_cache_length": loop.length,
            "prompt_tokens": int(inputs.embeds.shape[1]),
            "shared_prefix_tokens": inputs.prefix_length,
            "graph_step_ms": step_ms,
            "parts": parts,
        },
    )


if __name__ == "__main__":
    main()
