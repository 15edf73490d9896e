"""Synthetic scenes for the CPU demo: moving, counted and appearing coloured shapes as uint8 frames.

The visual signal is deliberately blunt (large flat shapes, movement across most of the frame,
saturated colours on a grey background) so a tiny LLaMA-VID on top of a frozen random ViT can
learn the colour and direction questions within minutes. Every answer is one word from a closed
set, so an exact-match judge works and chance level is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SIZE = 64  # frame width and height in pixels
FPS = 1  # one frame per second: the backend's fps=1 sampling keeps every frame
MIN_FRAMES, MAX_FRAMES = 4, 8
COLOUR_JITTER = 20  # per-channel offset range, small next to the palette's distances (> 150)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
}
DIRECTIONS = ("left", "right", "up", "down")
COUNTS = ("one", "two", "three")

QUESTIONS: dict[str, str] = {
    "colour": "What colour is the shape?",
    "direction": "Which direction does the shape move?",
    "count": "How many shapes are there?",
    "order": "Which colour appears first?",
}
ANSWERS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "direction": DIRECTIONS,
    "count": COUNTS,
    "order": tuple(COLOURS),
}
ANSWER_SUFFIX = " Answer with one word."

# Scene kinds in a fixed cycle: half the videos carry the colour + direction questions (the ones the
# tiny model is expected to learn), a quarter each the harder count and event-order questions.
KIND_CYCLE = ("motion", "count", "motion", "order")
KIND_QUESTIONS: dict[str, tuple[str, ...]] = {
    "motion": ("colour", "direction"),
    "count": ("count",),
    "order": ("order",),
}


@dataclass
class Scene:
    """One video's frames ``[T, SIZE, SIZE, 3]`` and its answers per question type."""

    kind: str
    frames: np.ndarray
    answers: dict[str, str] = field(default_factory=dict)


def kinds_for(count: int) -> list[str]:
    """Scene kinds of a split of ``count`` videos (the fixed cycle, so even tiny splits mix all kinds)."""
    return [KIND_CYCLE[i % len(KIND_CYCLE)] for i in range(count)]


def balanced_labels(rng: np.random.Generator, count: int, classes: int) -> list[int]:
    """``count`` labels in ``range(classes)``, each used equally often (up to one), in shuffled order.

    Balanced labels make the majority baseline equal chance, so accuracy above 1/k is real signal."""
    rest = rng.choice(classes, size=count % classes, replace=False)
    labels = np.concatenate([np.tile(np.arange(classes), count // classes), rest])
    return [int(x) for x in rng.permutation(labels)]


def _jittered(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.array(COLOURS[name], dtype=np.int16)
    return np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Grey with a left-to-right brightness ramp and a top-to-bottom warm-to-cool tint.

    A perfectly plain background would hide *where* a shape is from the content token (a mean over
    patches sees the same patches wherever the shape sits); the ramps make the uncovered background
    differ with position, while staying far less saturated than any shape colour."""
    grey = float(rng.integers(105, 141))
    ramp = float(rng.integers(35, 51)) * (np.arange(SIZE) / (SIZE - 1) - 0.5)  # brightness along x
    tint = float(rng.integers(20, 31)) * (0.5 - np.arange(SIZE) / (SIZE - 1))  # warm (top) to cool along y
    image = grey + ramp[None, :, None] + tint[:, None, None] * np.array([1.0, 0.0, -1.0])
    frame = np.clip(image.round(), 0, 255).astype(np.uint8)
    return np.repeat(frame[None], frames, axis=0)


def _mask(kind: str, x: int, y: int, side: int) -> np.ndarray:
    """Boolean ``SIZE x SIZE`` mask of a square or disc whose bounding box starts at (x, y)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    if kind == "square":
        return (xx >= x) & (xx < x + side) & (yy >= y) & (yy < y + side)
    r = side / 2
    return (xx + 0.5 - x - r) ** 2 + (yy + 0.5 - y - r) ** 2 <= r * r


def _shape_kind(rng: np.random.Generator) -> str:
    return "square" if rng.random() < 0.5 else "disc"


def motion_scene(rng: np.random.Generator, colour: str, direction: str, frames: int) -> Scene:
    """One large shape crossing most of the frame in ``direction``, one step per frame."""
    video = _background(rng, frames)
    side = int(rng.integers(24, 31))
    shape, rgb = _shape_kind(rng), _jittered(rng, colour)
    lo, hi = int(rng.integers(0, 4)), SIZE - side - int(rng.integers(0, 4))
    along = np.linspace(lo, hi, frames).round().astype(int)
    if direction in ("left", "up"):
        along = along[::-1]
    across = int(rng.integers(0, SIZE - side + 1))
    for t, pos in enumerate(along):
        x, y = (pos, across) if direction in ("left", "right") else (across, pos)
        video[t][_mask(shape, int(x), int(y), side)] = rgb
    return Scene("motion", video, {"colour": colour, "direction": direction})


def count_scene(rng: np.random.Generator, count: int, frames: int) -> Scene:
    """``count`` static shapes of distinct colours in distinct cells of a 3x3 grid."""
    video = _background(rng, frames)
    cell = SIZE // 3
    names = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), size=count, replace=False)]
    for name, slot in zip(names, rng.choice(9, size=count, replace=False), strict=True):
        side = int(rng.integers(12, 17))
        x = (slot % 3) * cell + int(rng.integers(0, cell - side + 1))
        y = (slot // 3) * cell + int(rng.integers(0, cell - side + 1))
        video[:, _mask(_shape_kind(rng), x, y, side)] = _jittered(rng, name)
    return Scene("count", video, {"count": COUNTS[count - 1]})


def order_scene(rng: np.random.Generator, first: str, frames: int) -> Scene:
    """Two shapes of different colours in opposite halves; ``first`` appears strictly earlier and
    both stay until the end, so the answer needs the order of events, not a single frame."""
    video = _background(rng, frames)
    second = str(rng.choice([c for c in COLOURS if c != first]))
    start = int(rng.integers(0, 2))
    onsets = (start, int(rng.integers(start + 1, frames)))
    side = int(rng.integers(20, 27))
    halves = rng.permutation(2)
    vertical = rng.random() < 0.5
    for name, onset, half in zip((first, second), onsets, halves, strict=True):
        main = int(half) * SIZE // 2 + int(rng.integers(0, SIZE // 2 - side + 1))
        other = int(rng.integers(0, SIZE - side + 1))
        x, y = (other, main) if vertical else (main, other)
        video[onset:, _mask(_shape_kind(rng), x, y, side)] = _jittered(rng, name)
    return Scene("order", video, {"order": first})


def make_scenes(seed: int, split_index: int, count: int) -> list[Scene]:
    """All scenes of one split; each question type's answers are balanced (colour and direction
    independently) and every video has its own RNG stream,
    so a split is a pure function of ``(seed, split_index, count)``."""
    split_rng = np.random.default_rng([seed, split_index])
    kinds = kinds_for(count)
    n_motion, n_count, n_order = (kinds.count(k) for k in ("motion", "count", "order"))
    colours = iter(balanced_labels(split_rng, n_motion, len(COLOURS)))
    directions = iter(balanced_labels(split_rng, n_motion, len(DIRECTIONS)))
    counts = iter(balanced_labels(split_rng, n_count, len(COUNTS)))
    firsts = iter(balanced_labels(split_rng, n_order, len(COLOURS)))
    scenes = []
    for index, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, split_index, index])
        frames = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
        if kind == "motion":
            scene = motion_scene(rng, list(COLOURS)[next(colours)], DIRECTIONS[next(directions)], frames)
        elif kind == "count":
            scene = count_scene(rng, next(counts) + 1, frames)
        else:
            scene = order_scene(rng, list(COLOURS)[next(firsts)], frames)
        scenes.append(scene)
    return scenes


def chance_levels(types: Sequence[str] = tuple(QUESTIONS)) -> dict[str, float]:
    """Accuracy (0-100) of a uniform guess over each question type's answer set."""
    return {t: 100.0 / len(ANSWERS[t]) for t in types}
