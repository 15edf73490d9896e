"""Frame sampling and decoding (decord and PyAV), and clear errors for bad videos."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from media import coloured_frames, write_video

from llamavid_eval.model.video import VideoDecodeError, count_frames, frame_indices, load_video, load_visuals


def test_one_frame_per_second_as_the_original():
    assert frame_indices(100, 29.97, fps=1, max_frames=None) == list(range(0, 100, 30))
    assert frame_indices(60, 30.0, fps=6, max_frames=None) == list(range(0, 60, 5))
    assert frame_indices(10, 2.0, fps=6, max_frames=None) == list(range(10))  # never below one frame a step
    assert frame_indices(0, 30.0, fps=1, max_frames=None) == []


def test_max_frames_thins_evenly_and_keeps_ends():
    assert frame_indices(300, 1.0, fps=1, max_frames=4) == [0, 100, 199, 299]


@pytest.fixture(scope="module")
def two_fps_video(tmp_path_factory):
    frames = coloured_frames(8, size=32, seed=3)
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", frames, fps=2), frames


def _nearest(decoded: np.ndarray, originals: np.ndarray) -> list[int]:
    means = decoded.reshape(len(decoded), -1, 3).mean(1)
    targets = originals[:, 0, 0, :].astype(float)
    return [int(np.abs(targets - m).sum(1).argmin()) for m in means]


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_decoders_sample_the_same_frames(two_fps_video, decoder, monkeypatch):
    path, originals = two_fps_video
    if decoder == "pyav":
        monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError
    frames = load_video(path, fps=1)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    assert _nearest(frames, originals) == [0, 2, 4, 6]
    assert _nearest(load_video(path, fps=1, max_frames=2), originals) == [0, 6]


def test_missing_and_corrupt_videos_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        load_video(tmp_path / "nothere.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        load_video(broken)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4"):
        load_video(empty)


def test_images_and_multi_image_documents(tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "a.png")
    frames = load_visuals([str(tmp_path / "a.png"), Image.new("RGB", (8, 8), (0, 0, 255))])
    assert len(frames) == 2 and frames[1].getpixel((0, 0)) == (0, 0, 255)
    with pytest.raises(VideoDecodeError, match="zero frames"):
        load_visuals([])


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_frame_count_without_decoding_matches_decoding(two_fps_video, decoder, monkeypatch, tmp_path):
    path, _ = two_fps_video
    if decoder == "pyav":
        monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError
    for fps, cap in ((1, None), (2, None), (1, 3)):
        assert count_frames(path, fps=fps, max_frames=cap) == len(load_video(path, fps=fps, max_frames=cap))
    assert count_frames(tmp_path / "still.png") == 1


def _decord_that_cannot_open(*_args, **_kwargs):
    raise RuntimeError("[decord] cannot open this file")


def test_decoding_and_counting_share_one_fallback_rule(two_fps_video, monkeypatch, tmp_path):
    """decord installed but failing on a file: both fall back to PyAV (counting used to raise instead)."""
    path, originals = two_fps_video
    broken = types.SimpleNamespace(VideoReader=_decord_that_cannot_open, cpu=lambda index: index)
    monkeypatch.setitem(sys.modules, "decord", broken)
    assert count_frames(path, fps=1) == len(load_video(path, fps=1)) == 4
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    for read in (load_video, count_frames):
        with pytest.raises(VideoDecodeError, match=r"garbage\.mp4.*decord: RuntimeError.*; pyav: "):
            read(garbage)
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        count_frames(tmp_path / "absent.mp4")


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_video_cut_short_is_refused_not_judged_on_its_first_part(tmp_path, decoder, monkeypatch):
    """A partial download opens, and its first seconds decode; its header still says how long it is."""
    if decoder == "pyav":
        monkeypatch.setitem(sys.modules, "decord", None)
    whole = write_video(tmp_path / "whole.mp4", coloured_frames(40, size=32, seed=1), fps=2, faststart=True)
    assert load_video(whole, fps=1).shape[0] == count_frames(whole, fps=1) == 20
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for read in (load_video, count_frames):  # count_frames is what prepare probes with
        with pytest.raises(VideoDecodeError, match=r"cut\.mp4.*cut short: its header declares 40 frames, only \d+"):
            read(cut, fps=1)
