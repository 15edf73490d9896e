"""Test media: tiny MP4s written with PyAV and frames whose colours reveal which were sampled."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: Path, frames: np.ndarray, fps: int = 1, faststart: bool = False) -> Path:
    """Write ``[T, H, W, 3]`` uint8 frames as an MP4 (mpeg4) with PyAV; ``faststart``: the index (with the
    frame count) first, as streamed downloads are, so a file cut short still opens."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def coloured_frames(count: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Frames with a distinct flat colour each (so sampled indices are visible in the pixels)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(count, 3), dtype=np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (count, size, size, 3)).copy()
