"""Write the synthetic ``llamavid_demo`` dataset: real MP4s + QA records in the video-QA task layout.

    python -m llamavid_eval.tasks.llamavid_demo.make_data --out DIR --seed 0 --train 400 --test 100

``DIR`` (default ``$LLAMAVID_DATA_ROOT/llamavid_demo``, where the task reads) gets::

    videos/<video_id>.mp4         64x64, 4-8 frames at 1 fps (libx264, else mpeg4)
    train.jsonl, test.jsonl       {"id", "video_id", "video", "question", "answer", "question_type",
                                   "choices", "num_frames"}
    train_conversations.json      LLaVA-format instruction-tuning records of the train split

"video" is ``llamavid_demo/videos/<video_id>.mp4``: relative to the data root (DIR's parent), the one
convention of every prepared dataset (``llamavid_eval.core.records``), so tasks and training resolve
it the same way.
    meta.json                     seed, counts, per question type the answer set and chance level

The output is a pure function of the arguments (same seed -> same bytes on one PyAV/codec build).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from llamavid_eval.core.records import DATA_ROOT_ENV, conversation_record, data_root
from llamavid_eval.tasks.llamavid_demo import scenes
from llamavid_eval.tasks.llamavid_demo.scenes import ANSWER_SUFFIX, ANSWERS, FPS, KIND_QUESTIONS, QUESTIONS, SIZE, Scene

FAMILY = "llamavid_demo"
VERSION = 1  # bump when the generator's output changes
SPLITS = ("train", "test")  # split index = position (part of every video's RNG seed)


def default_out() -> Path:
    return data_root() / FAMILY


def pick_codec() -> str:
    """libx264 when this PyAV build can encode it (real-world h264), else mpeg4 (always built in)."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # codec not compiled into this FFmpeg
        return "mpeg4"


def write_mp4(path: Path, frames: np.ndarray, codec: str) -> None:
    """Encode ``[T, H, W, 3]`` uint8 frames at 1 fps, high quality, single-threaded (deterministic bytes)."""
    options = {"crf": "10", "preset": "medium", "bframes": "0"} if codec == "libx264" else {"qscale": "2"}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.thread_count = 1
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def qa_records(video_id: str, scene: Scene) -> list[dict[str, Any]]:
    """One record per question the scene answers (the video-QA tasks' record shape plus choices)."""
    return [
        {
            "id": f"{video_id}_{qtype}",
            "video_id": video_id,
            "video": f"{FAMILY}/videos/{video_id}.mp4",
            "question": QUESTIONS[qtype],
            "answer": scene.answers[qtype],
            "question_type": qtype,
            "choices": list(ANSWERS[qtype]),
            "num_frames": int(scene.frames.shape[0]),
        }
        for qtype in KIND_QUESTIONS[scene.kind]
    ]


def conversation(record: dict[str, Any]) -> dict[str, Any]:
    """LLaVA instruction-tuning record; the prompt is exactly what the task sends (plus ``<image>``)."""
    return conversation_record(record["id"], record["video"], f"{record['question']}{ANSWER_SUFFIX}", record["answer"])


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")


def split_summary(records: Sequence[dict[str, Any]], videos: int) -> dict[str, Any]:
    """Counts per question type and answer, and the majority-answer baseline (0-100) per type."""
    per_type: dict[str, Any] = {}
    for qtype in QUESTIONS:
        answers = Counter(r["answer"] for r in records if r["question_type"] == qtype)
        total = sum(answers.values())
        per_type[qtype] = {
            "questions": total,
            "answers": dict(sorted(answers.items())),
            "majority_baseline": 100.0 * max(answers.values()) / total if total else None,
        }
    return {"videos": videos, "questions": len(records), "per_type": per_type}


def check_out(out: Path) -> None:
    """Refuse a non-empty folder that an earlier run did not write (never overwrite someone's data)."""
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        ours = json.loads((out / "meta.json").read_text(encoding="utf-8")).get("dataset") == FAMILY
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise FileExistsError(
            f"{out} is not empty and holds no {FAMILY} meta.json; choose an empty or new --out folder"
        )


def make_dataset(
    out: Path, seed: int = 0, train: int = 400, test: int = 100, codec: str | None = None
) -> dict[str, Any]:
    """Generate both splits into ``out`` (replacing an earlier demo dataset there); returns meta."""
    codec = codec or pick_codec()
    check_out(out)
    videos_dir = out / "videos"
    for stale in videos_dir.glob("t*_*.mp4"):  # a larger earlier run's videos would otherwise linger
        if stale.name.startswith(SPLITS):
            stale.unlink()
    videos_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train": train, "test": test}
    meta: dict[str, Any] = {
        "dataset": FAMILY,
        "generator_version": VERSION,
        "seed": seed,
        "codec": codec,
        "frame_size": [SIZE, SIZE],
        "fps": FPS,
        "frames_per_video": [scenes.MIN_FRAMES, scenes.MAX_FRAMES],
        "question_types": {
            qtype: {"question": QUESTIONS[qtype], "answers": list(ANSWERS[qtype]), "chance": chance}
            for qtype, chance in scenes.chance_levels().items()
        },
        "prompt_suffix": ANSWER_SUFFIX,
        "metric": "exact-match accuracy (0-100); chance = uniform guess over the answer set",
        "splits": {},
    }
    for split_index, split in enumerate(SPLITS):
        records: list[dict[str, Any]] = []
        for index, scene in enumerate(scenes.make_scenes(seed, split_index, counts[split])):
            video_id = f"{split}_{index:05d}"
            write_mp4(videos_dir / f"{video_id}.mp4", scene.frames, codec)
            records.extend(qa_records(video_id, scene))
        _write_jsonl(out / f"{split}.jsonl", records)
        if split == "train":
            conversations = [conversation(r) for r in records]
            (out / "train_conversations.json").write_text(json.dumps(conversations, indent=1) + "\n", encoding="utf-8")
        meta["splits"][split] = split_summary(records, counts[split])
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llamavid_eval.tasks.llamavid_demo.make_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {default_out()})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=400, help="training videos (default 400)")
    parser.add_argument("--test", type=int, default=100, help="test videos (default 100)")
    parser.add_argument("--codec", choices=("libx264", "mpeg4"), default=None, help="default: libx264 if available")
    args = parser.parse_args(argv)
    if args.train < 0 or args.test < 1:
        parser.error("--train must be >= 0 and --test >= 1")
    out = (args.out or default_out()).expanduser().absolute()
    started = time.perf_counter()
    try:
        meta = make_dataset(out, seed=args.seed, train=args.train, test=args.test, codec=args.codec)
    except FileExistsError as error:
        parser.error(str(error))
    seconds = time.perf_counter() - started
    for split, summary in meta["splits"].items():
        print(f"{split}: {summary['videos']} videos, {summary['questions']} questions")
    print(f"wrote {out} in {seconds:.1f} s (codec {meta['codec']}, seed {meta['seed']})")
    if out.parent != data_root() or out.name != FAMILY:
        print(f"The task reads $LLAMAVID_DATA_ROOT/{FAMILY}: run it with {DATA_ROOT_ENV}={out.parent}"
              + ("" if out.name == FAMILY else f" after naming the folder {FAMILY}"))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
