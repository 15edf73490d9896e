"""Video and image decoding for LLaMA-VID: frames at a chosen rate, capped, as uint8 RGB arrays.

decord is what the original evaluation used (random access is fast); PyAV is the fallback where
decord is not installed (e.g. aarch64), cannot open a file or finds no frames in it. Decoding and
frame counting follow this one rule (``_first_decoder``), so a count always matches a decode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class VideoDecodeError(RuntimeError):
    """A video could not be decoded into frames; the message names the file and the decoders' errors."""


def frame_indices(total_frames: int, average_fps: float, fps: float, max_frames: int | None) -> list[int]:
    """Indices 0, s, 2s, ... with ``s = round(average_fps / fps)``, then evenly thinned to ``max_frames``.

    With ``fps=1`` this is the original evaluation's "one frame per second" (``s = round(avg fps)``).
    """
    if total_frames <= 0:
        return []
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = max(1, round(average_fps / fps)) if average_fps > 0 else 1
    indices = list(range(0, total_frames, step))
    if max_frames is not None and len(indices) > max_frames:
        picks = np.linspace(0, len(indices) - 1, max_frames).round().astype(int)
        indices = [indices[i] for i in picks]
    return indices


def load_video(path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames sampled at ``fps`` (capped at ``max_frames``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    return _first_decoder(path, [(name, decode) for name, decode, _ in _DECODERS], fps, max_frames)


def count_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None) -> int:
    """Frames :func:`load_visuals` returns for one file, read from the container without decoding.

    Training budgets visual tokens per example before it decodes anything (images count 1). The
    decoder is chosen by the same rule as :func:`load_video`, so the count is that decoder's.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    return _first_decoder(path, [(name, count) for name, _, count in _DECODERS], fps, max_frames)


def _first_decoder(path: Path, attempts: list[tuple[str, Callable[..., Any]]], fps: float, max_frames: int | None):
    """The one fallback rule: the first decoder that is installed, opens the file and finds frames wins.

    Anything else (not installed, an exception, zero frames) moves on to the next one; when none is
    left the error names the file and every decoder's reason.
    """
    errors = []
    for name, attempt in attempts:
        try:
            result = attempt(path, fps, max_frames)
        except ImportError as error:
            errors.append(f"{name}: not installed ({error})")
            continue
        except Exception as error:  # decoders raise many types for a damaged file
            errors.append(f"{name}: {type(error).__name__}: {error}")
            continue
        if (len(result) if isinstance(result, np.ndarray) else result) == 0:
            errors.append(f"{name}: found zero frames")
            continue
        return result
    raise VideoDecodeError(f"cannot decode video {path}: " + "; ".join(errors))


def _decord_reader(path: Path):
    from decord import VideoReader, cpu

    return VideoReader(str(path), ctx=cpu(0), num_threads=1)


def _decode_with_decord(path: Path, fps: float, max_frames: int | None) -> np.ndarray:
    reader = _decord_reader(path)
    indices = frame_indices(len(reader), reader.get_avg_fps(), fps, max_frames)
    if not indices:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return reader.get_batch(indices).asnumpy()


def _count_with_decord(path: Path, fps: float, max_frames: int | None) -> int:
    reader = _decord_reader(path)
    return len(frame_indices(len(reader), reader.get_avg_fps(), fps, max_frames))


#: A file whose readable frames fall below this share of what its header declares was cut short (a
#: partial download or copy): it opens and decodes its first part, and would be judged on that part.
COMPLETE = 0.9


def _pyav_plan(path: Path, fps: float, max_frames: int | None) -> list[int]:
    """The frame indices to keep, from a pass over the packets (no decoding); a file cut short raises."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = sum(1 for packet in container.demux(stream) if packet.size)
        average = float(stream.average_rate) if stream.average_rate else 0.0
        declared = stream.frames
    if declared > 0 and total < COMPLETE * declared:
        raise VideoDecodeError(
            f"cut short: its header declares {declared} frames, only {total} can be read; copy or download it again"
        )
    return frame_indices(total, average, fps, max_frames)


def _decode_with_pyav(path: Path, fps: float, max_frames: int | None) -> np.ndarray:
    """Only the planned frames are kept while decoding: an hour of video never sits in memory whole."""
    import av

    indices = _pyav_plan(path, fps, max_frames)
    keep, frames = set(indices), []
    if indices:
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(container.streams.video[0])):
                if index in keep:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if index >= indices[-1]:
                    break
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def _count_with_pyav(path: Path, fps: float, max_frames: int | None) -> int:
    return len(_pyav_plan(path, fps, max_frames))


# (name, decode, count) in order of preference: decord first (what the original evaluation used).
_DECODERS = (
    ("decord", _decode_with_decord, _count_with_decord),
    ("pyav", _decode_with_pyav, _count_with_pyav),
)


def load_visual(
    visual: str | os.PathLike | Image.Image | np.ndarray, fps: float = 1.0, max_frames: int | None = None
) -> list[Image.Image] | np.ndarray:
    """One lmms-eval visual (video path, image path, PIL image or array) -> frames."""
    if isinstance(visual, Image.Image):
        return [visual.convert("RGB")]
    if isinstance(visual, np.ndarray):
        return visual[None] if visual.ndim == 3 else visual
    path = Path(visual)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        return [Image.open(path).convert("RGB")]
    return load_video(path, fps=fps, max_frames=max_frames)


def load_visuals(
    visuals: Sequence[str | os.PathLike | Image.Image | np.ndarray], fps: float = 1.0, max_frames: int | None = None
) -> list[Image.Image | np.ndarray]:
    """All visuals of one document as one frame list (a multi-image doc is treated like a video)."""
    frames: list[Image.Image | np.ndarray] = []
    for visual in visuals:
        frames.extend(list(load_visual(visual, fps=fps, max_frames=max_frames)))
    if not frames:
        raise VideoDecodeError("the document has no visual input (zero frames)")
    if max_frames is not None and len(frames) > max_frames:
        picks = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in picks]
    return frames
