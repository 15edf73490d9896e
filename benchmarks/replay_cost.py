"""Host time of one decode-step graph replay, with the GPU idle and with the GPU busy.

``timeline.py`` showed the host spending about as long inside the 9 decode-step replays of a batch
as the GPU takes to run them. Either launching the ~1,300-kernel graph costs the host that much
(then: fewer, larger graphs), or the launch waits for room in a full queue behind earlier work
(then: the host must have other work to do before it launches). This tells the two apart.

    python benchmarks/replay_cost.py --rows 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from record import write_record

from llamavid_eval.generation.decoding import GraphDecoder, LlmInputs
from llamavid_eval.model.random_init import build_random


def host_ms(fn, busy_ms: float, repeats: int, rewind) -> float:
    """Median host milliseconds of ``fn()``, each time after queueing ``busy_ms`` of GPU sleep;
    ``rewind()`` first puts the cache's write position and the output column back (each replay
    advances them; past the buffers' ends the writes are out of bounds: a device-side assert on the
    H200, record-less run of bec6368)."""
    times = []
    for _ in range(repeats):
        rewind()
        torch.cuda.synchronize()
        if busy_ms:
            torch.cuda._sleep(int(busy_ms * 1.98e6))  # ~1.98 GHz SM clock
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    torch.cuda.synchronize()
    return statistics.median(times)


@torch.inference_mode()  # the loop's buffers are inference tensors: rewinding them is an in-place update
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = build_random("7b")
    decoder = GraphDecoder(model, args.rows)
    embeds = torch.randn(args.rows, 28, model.config.hidden_size, device="cuda", dtype=torch.bfloat16)
    inputs = LlmInputs(embeds, torch.ones(args.rows, 28, dtype=torch.long, device="cuda"))
    with torch.inference_mode():
        decoder.generate(inputs, eos_token_id=2, max_new_tokens=10, min_new_tokens=10)  # records the graph
    (loop,) = decoder._states.values()

    def rewind() -> None:  # each replay advances the write position and the output column
        for layer in loop.cache.layers:
            layer.cumulative_length.fill_(28)
        loop.step_index.fill_(1)

    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rewind()
    start.record()
    loop.graph.replay()
    end.record()
    end.synchronize()
    nine = lambda: [loop.graph.replay() for _ in range(9)]  # noqa: E731
    figures = {
        "rows": args.rows,
        "gpu_ms_per_replay": start.elapsed_time(end),
        "host_ms_one_replay_gpu_idle": host_ms(loop.graph.replay, 0, args.repeats, rewind),
        "host_ms_one_replay_gpu_busy_50ms": host_ms(loop.graph.replay, 50, args.repeats, rewind),
        "host_ms_nine_replays_gpu_idle": host_ms(nine, 0, args.repeats, rewind),
        "host_ms_nine_replays_gpu_busy_50ms": host_ms(nine, 50, args.repeats, rewind),
    }
    print(figures)
    write_record("replay_cost", figures)


if __name__ == "__main__":
    main()
