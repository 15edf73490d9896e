"""The HTML leaderboard in headless Chromium: renders, sorts, no JS errors, non-trivial screenshot.

Needs the Debian package ``chromium`` (``apt-get install -y chromium``); CI installs it. Without it
these tests skip (the page is still checked statically).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.image import imread

from llamavid_eval.results.__main__ import main

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium); CI installs it"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UCF = [
    ("Abuse", "Abuse"),
    ("Normal", "Normal"),
    ("Normal", "Normal"),
    ("Arrest", "UNMAPPED"),
    ("RoadAccidents", "RoadAccidents"),
    ("Shooting", "Fighting"),
]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html")
    folder = root / "outputs" / "YanweiLi__llama-vid-7b-full-224-video-fps-1"
    folder.mkdir(parents=True)
    for stamp, fps, acc in (("20250101_100000", 1, 57.0), ("20250102_100000", 6, None)):
        results = {
            "ucf_crime": {
                "alias": "ucf_crime",
                "accuracy,none": acc if acc is not None else "N/A",
                "accuracy_stderr,none": 2.0,
            },
            "msvd_qa": {"accuracy,none": 61.0 + fps, "mean_score,none": 3.2},
        }
        config = {
            "model": "llamavid",
            "model_args": f"pretrained=YanweiLi/llama-vid-7b-full-224-video-fps-1,fps={fps},max_frames=300",
        }
        (folder / f"{stamp}_results.json").write_text(json.dumps({"results": results, "config": config, "date": stamp}))
        lines = [{"doc_id": i, "accuracy": {"gold": g, "pred": p}} for i, (g, p) in enumerate(UCF)]
        (folder / f"{stamp}_samples_ucf_crime.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = root / "board"
    assert main(["table", str(root / "outputs"), "--out", str(out)]) == 0
    return out / "leaderboard.html"


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 3  # confusion matrices, per-class bars, accuracy vs fps
    assert not re.search(r"""(src|href)=["']https?:""", text)
    assert 'id="board"' in text and "—" in text and "reported" in text
    # 57.0 with lmms-eval's stderr 2.0 (the samples give 50%: they do not reproduce it, so not used)
    assert "57.0 ± 3.9" in text and "Interval method: normal approximation" in text and "carry no interval" in text


@needs_chromium
def test_renders_and_sorts_without_js_errors(page: Path, tmp_path: Path) -> None:
    run = chromium(tmp_path, "--dump-dom", page.as_uri() + "#selftest")
    assert run.returncode == 0, run.stderr[-2000:]
    body = re.search(r"<body[^>]*>", run.stdout)
    assert body, run.stdout[:500]
    assert 'data-ready="1"' in body.group(0)  # the script ran to its end
    assert 'data-selftest="ok"' in body.group(0)  # clicking a metric header sorts best first, missing last
    assert "data-js-errors" not in body.group(0)
    assert run.stdout.count("<tr") >= 4


@needs_chromium
def test_screenshot_is_not_blank(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, "--window-size=1400,1000", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), run.stderr[-2000:]
    image = imread(shot)[..., :3]
    assert image.shape[:2] == (1000, 1400)
    assert image.std() > 0.05  # text, table and plots, not an empty page
    assert len({tuple(px) for px in (image[::10, ::10] * 255).astype(int).reshape(-1, 3)}) > 50
