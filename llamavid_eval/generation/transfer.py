"""Host-to-GPU copies that never make the host wait.

``tensor.to("cuda", non_blocking=True)`` from ordinary (pageable) host memory is not asynchronous:
CUDA stages the bytes through a pinned buffer and the host waits for the copy, which waits for
everything queued before it on the stream. In the runner's pipeline that is the vision tower and
the previous batch's decode, so a 1 KB index copy cost the host 14.6 ms on an H200
(``benchmarks/timeline.py``). Pinned first (PyTorch caches pinned blocks, so this is a memcpy),
the copy is queued and the host goes on.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; a host tensor bound for a GPU is pinned and copied without blocking."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
