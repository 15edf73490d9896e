"""A function of tensors replayed as one CUDA graph per input shape.

A module built from many small layers (EVA-ViT-G's 39 blocks, ~20 launches each) costs the host
more time to launch than the GPU takes to run it: in the runner's pipeline the host then keeps the
GPU waiting (``benchmarks/timeline.py``: 50 ms of host time for the vision tower of one batch).
Replayed from a graph, launching it costs one call. Inputs are copied into the graph's static
buffers and the output is copied out, so callers keep plain tensors; the few shapes a run meets
(frames per batch) each get their graph, the least recently used dropped beyond ``kept``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch


class ShapeGraphs:
    """``fn(*tensors) -> tensor`` with static buffers per input shape; on CUDA replayed as a graph.

    ``fn`` must only read its inputs and the module state (no host work that depends on values):
    a graph replays the kernels it recorded. On the CPU (or with ``use_graphs=False``) the same
    buffers feed ``fn`` directly, which is what the tests check.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], kept: int = 4, use_graphs: bool | None = None) -> None:
        self.fn = fn
        self.kept = kept
        self.use_graphs = use_graphs
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in tensors)
        entry = self._entries.pop(key, None)
        if entry is None:
            while len(self._entries) >= self.kept:
                self._entries.popitem(last=False)
            graphs = self.use_graphs if self.use_graphs is not None else tensors[0].device.type == "cuda"
            entry = _Entry(self.fn, tensors, graphs)
        self._entries[key] = entry
        return entry.run(tensors)


class _Entry:
    def __init__(self, fn: Callable[..., torch.Tensor], like: tuple[torch.Tensor, ...], use_graphs: bool) -> None:
        self.fn = fn
        self.inputs = [t.clone() for t in like]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        if use_graphs:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: kernels chosen and loaded before capture
                    fn(*self.inputs)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.output = fn(*self.inputs)

    def run(self, tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        for buffer, tensor in zip(self.inputs, tensors, strict=True):
            buffer.copy_(tensor, non_blocking=True)
        if self.graph is None:
            return self.fn(*self.inputs)
        self.graph.replay()
        return self.output.clone()  # the next replay overwrites the graph's output
