"""The synthetic demo dataset (``tasks/llamavid_demo``): the answers are really in the decoded pixels,
generation is deterministic, and the ``llamavid_demo`` task scores exact-match accuracies through
lmms-eval's evaluator as hand-computed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager
from test_tasks_support import ScriptedModel, evaluate, metric

from llamavid_eval.core.records import DatasetNotPreparedError
from llamavid_eval.model.video import load_video
from llamavid_eval.tasks import TASKS_DIR
from llamavid_eval.tasks.llamavid_demo import make_data
from llamavid_eval.tasks.llamavid_demo.scenes import ANSWER_SUFFIX, ANSWERS, COLOURS, QUESTIONS, SIZE

NAMES = list(COLOURS)
PALETTE = np.array(list(COLOURS.values()), dtype=float)
MIN_PIXELS = 20  # eroded core of the smallest shape (12 px disc) has ~50 px; codec fringe has none


def generate(out: Path, seed: int = 0, train: int = 8, test: int = 4) -> Path:
    assert make_data.main(["--out", str(out), "--seed", str(seed), "--train", str(train), "--test", str(test)]) == 0
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("root") / "llamavid_demo")


def decode(path: Path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate)


def erode(mask: np.ndarray, steps: int = 2) -> np.ndarray:
    """Drop ``steps`` pixels of border: yuv420p's 2x2 chroma blurs shape edges into off-palette hues."""
    for _ in range(steps):
        padded = np.pad(mask, 1)
        mask = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask


def blobs(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Saturated pixels (the background is a low-saturation grey ramp) grouped by nearest palette
    colour and eroded -> boolean masks of the shapes' cores, by colour."""
    pixels = frame.astype(float)
    foreground = pixels.max(-1) - pixels.min(-1) > 90
    nearest = np.linalg.norm(pixels[..., None, :] - PALETTE, axis=-1).argmin(-1)
    masks = {name: erode(foreground & (nearest == i)) for i, name in enumerate(NAMES)}
    return {name: mask for name, mask in masks.items() if mask.sum() >= MIN_PIXELS}


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def check_pixels(record: dict, frames: np.ndarray) -> None:
    """The record's answer, read back from the decoded frames by simple image statistics."""
    qtype, answer = record["question_type"], record["answer"]
    per_frame = [blobs(f) for f in frames]
    if qtype == "colour":
        assert all(list(b) == [answer] for b in per_frame), (record["id"], [list(b) for b in per_frame])
        mean = np.mean([frames[t][b[answer]].mean(0) for t, b in enumerate(per_frame)], axis=0)
        assert np.linalg.norm(mean - np.array(COLOURS[answer])) < 45  # large, flat, saturated
    elif qtype == "direction":
        (name,) = set().union(*per_frame)
        path = np.stack([centroid(b[name]) for b in per_frame])
        axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[answer]
        steps = sign * np.diff(path[:, axis])
        assert (steps > 2).all() and steps.sum() > 25, (record["id"], path)  # clear, monotonic
        assert np.ptp(path[:, 1 - axis]) < 2  # no drift across the movement
    elif qtype == "count":
        counts = {len(b) for b in per_frame}
        assert counts == {ANSWERS["count"].index(answer) + 1}, (record["id"], counts)
    else:
        first = next(t for t, b in enumerate(per_frame) if b)
        assert list(per_frame[first]) == [answer]
        assert len(per_frame[-1]) == 2 and answer in per_frame[-1]


def test_layout_meta_and_conversations(data_dir):
    test, train = read_jsonl(data_dir / "test.jsonl"), read_jsonl(data_dir / "train.jsonl")
    # kinds cycle motion, count, motion, order; a motion video carries colour + direction questions
    assert [r["question_type"] for r in test] == ["colour", "direction", "count", "colour", "direction", "order"]
    assert len(train) == 12 and len({r["video_id"] for r in train}) == 8
    for record in test + train:
        assert record["id"] == f"{record['video_id']}_{record['question_type']}"
        assert record["video"] == f"llamavid_demo/videos/{record['video_id']}.mp4"
        assert (data_dir.parent / record["video"]).is_file()
        assert record["question"] == QUESTIONS[record["question_type"]]
        assert record["choices"] == list(ANSWERS[record["question_type"]]) and record["answer"] in record["choices"]
        assert 4 <= record["num_frames"] <= 8
    conversations = json.loads((data_dir / "train_conversations.json").read_text())
    assert len(conversations) == len(train)
    for conv, record in zip(conversations, train, strict=True):
        assert conv == {"id": record["id"], "video": record["video"], "conversations": [
            {"from": "human", "value": f"<image>\n{record['question']}{ANSWER_SUFFIX}"},
            {"from": "gpt", "value": record["answer"]}]}  # fmt: skip
    meta = json.loads((data_dir / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["fps"] == 1 and meta["frame_size"] == [SIZE, SIZE]
    assert {t: q["chance"] for t, q in meta["question_types"].items()} == pytest.approx(
        {"colour": 25.0, "direction": 25.0, "count": 100 / 3, "order": 25.0}
    )
    assert meta["splits"]["test"]["videos"] == 4 and meta["splits"]["test"]["questions"] == 6
    assert meta["splits"]["train"]["per_type"]["colour"]["questions"] == 4


def test_answers_are_in_the_pixels(data_dir):
    for split in ("train", "test"):
        for record in read_jsonl(data_dir / f"{split}.jsonl"):
            frames, rate = decode(data_dir.parent / record["video"])
            assert frames.shape == (record["num_frames"], SIZE, SIZE, 3) and rate == 1.0
            check_pixels(record, frames)


def test_backend_loader_keeps_every_frame_at_1_fps(data_dir):
    record = read_jsonl(data_dir / "test.jsonl")[0]
    frames, _ = decode(data_dir.parent / record["video"])
    np.testing.assert_array_equal(load_video(data_dir.parent / record["video"], fps=1), frames)


def test_answers_are_balanced():
    from llamavid_eval.tasks.llamavid_demo.scenes import make_scenes

    scenes = make_scenes(seed=3, split_index=0, count=64)  # 32 motion, 16 count, 16 order
    colours = [s.answers["colour"] for s in scenes if s.kind == "motion"]
    directions = [s.answers["direction"] for s in scenes if s.kind == "motion"]
    firsts = [s.answers["order"] for s in scenes if s.kind == "order"]
    assert all(colours.count(c) == 8 and firsts.count(c) == 4 for c in COLOURS)
    assert all(directions.count(d) == 8 for d in ANSWERS["direction"])
    counts = [s.answers["count"] for s in scenes if s.kind == "count"]
    assert all(5 <= counts.count(c) <= 6 for c in ANSWERS["count"])


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, data_dir):
    again = generate(tmp_path / "again" / "llamavid_demo")
    files = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (data_dir / name).read_bytes() == (again / name).read_bytes(), name
    other = generate(tmp_path / "other" / "llamavid_demo", seed=1)
    assert (other / "test.jsonl").read_bytes() != (data_dir / "test.jsonl").read_bytes() or any(
        (other / n).read_bytes() != (data_dir / n).read_bytes() for n in files if n.suffix == ".mp4"
    )
    assert json.loads((other / "meta.json").read_text())["seed"] == 1


# Scripted replies for the 6 test questions (kinds motion, count, motion, order):
#   test_00000 colour: right, upper case + punctuation   test_00000 direction: right, in a sentence
#   test_00001 count: right                              test_00002 colour: wrong colour
#   test_00002 direction: hedged "<answer> or <other>"   test_00003 order: wrong colour
# -> 3/6 right: accuracy 50, colour 50, direction 50, count 100, order 0.
def scripted(doc: dict) -> str:
    answer, choices = doc["answer"], doc["choices"]
    other = next(c for c in choices if c != answer)
    replies = {
        "test_00000_colour": f"{answer.upper()}.",
        "test_00000_direction": f"The shape moves {answer}",
        "test_00001_count": answer,
        "test_00002_colour": other,
        "test_00002_direction": f"{answer} or {other}",
        "test_00003_order": other,
    }
    return replies[doc["id"]]


@pytest.fixture
def root(data_dir, monkeypatch) -> Path:
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(data_dir.parent))
    monkeypatch.setenv("LLAMAVID_JUDGE", "openai")  # ignored: the demo always uses the exact judge
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return data_dir.parent


def test_task_scores_exact_match_through_the_evaluator(root, data_dir):
    model = ScriptedModel(scripted)
    results = evaluate(["llamavid_demo"], model)
    expected = {"accuracy": 50.0, "accuracy_colour": 50.0, "accuracy_direction": 50.0, "accuracy_count": 100.0,
                "accuracy_order": 0.0}  # fmt: skip
    for name, value in expected.items():
        assert metric(results, "llamavid_demo", name) == pytest.approx(value), name
    test = read_jsonl(data_dir / "test.jsonl")
    assert model.prompts == [f"{r['question']} Answer with one word." for r in test]
    assert model.visuals == [[str(data_dir.parent / r["video"])] for r in test]
    samples = results["samples"]["llamavid_demo"]
    logged = [s["accuracy"] for s in samples]
    assert [r["id"] for r in logged] == [r["id"] for r in test]
    assert all({"id", "question", "answer", "prediction", "question_type"} <= set(r) for r in logged)
    assert [r["correct"] for r in logged] == [True, True, True, False, False, False]
    assert [r["hedged"] for r in logged] == [False, False, False, False, True, False]
    assert {r["judge"] for r in logged} == {"exact-match"}
    assert samples[0]["target"] == test[0]["answer"]


def test_limit_and_missing_type_give_nan(root):
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    results = simple_evaluate(model=ScriptedModel(scripted), tasks=["llamavid_demo"], task_manager=manager,
                              limit=2, bootstrap_iters=0)  # fmt: skip
    assert metric(results, "llamavid_demo", "accuracy") == 100.0  # test_00000: colour + direction, both right
    assert math.isnan(metric(results, "llamavid_demo", "accuracy_count"))


def test_missing_dataset_names_the_generator(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(tmp_path))
    with pytest.raises(
        DatasetNotPreparedError, match=r"python -m llamavid_eval\.tasks\.llamavid_demo\.make_data --out .*llamavid_demo"
    ):
        evaluate(["llamavid_demo"], ScriptedModel(lambda doc: ""))


def test_regenerating_replaces_and_foreign_folders_are_refused(tmp_path):
    out = generate(tmp_path / "llamavid_demo", train=8, test=4)
    generate(out, train=4, test=2)  # smaller run into the same folder: no stale videos left behind
    assert len(list((out / "videos").iterdir())) == 6
    foreign = tmp_path / "mine"
    (foreign / "videos").mkdir(parents=True)
    (foreign / "videos" / "keep.mp4").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not empty"):
        make_data.make_dataset(foreign, train=1, test=1)
    with pytest.raises(SystemExit):  # the CLI reports it as a usage error
        generate(foreign)
    assert [p.name for p in (foreign / "videos").iterdir()] == ["keep.mp4"]
