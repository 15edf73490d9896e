"""Shared fixtures: the golden fixture from ../shared, a tiny release in the released layout, tiny videos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("LLAMAVID_GOLDEN", REPO.parent / "shared" / "fixtures" / "llamavid-golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN / "reference.safetensors").is_file():
        pytest.fail(f"golden fixture missing at {GOLDEN}; set LLAMAVID_GOLDEN to its folder")
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """A random tiny LLaMA-VID written in the exact released on-disk layout."""
    from llamavid_eval.model.tiny import write_tiny_release

    return write_tiny_release(tmp_path_factory.mktemp("tiny-release"), seed=0)
