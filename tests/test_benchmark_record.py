"""benchmarks/record.py: every benchmark's JSON record is written whole, whatever its arguments hold."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

RECORD = Path(__file__).parents[1] / "benchmarks" / "record.py"


def _record_module():
    spec = importlib.util.spec_from_file_location("bench_record", RECORD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_record_keeps_path_arguments_as_text_and_numbers_as_floats(tmp_path):
    """`throughput.py --video-dir` puts a Path into the arguments; the record is still written, the
    path as text, numpy and torch numbers as floats."""
    record = _record_module()
    figures = {"arguments": {"video_dir": Path("/tmp/bench-videos"), "videos": 520}, "qps": np.float32(550.5)}
    path = record.write_record("throughput", figures, folder=tmp_path, device="NVIDIA H200")
    written = json.loads(path.read_text())
    assert path.name.endswith("_throughput_nvidia-h200.json")
    assert written["arguments"] == {"video_dir": "/tmp/bench-videos", "videos": 520}
    assert written["qps"] == 550.5 and written["device"] == "NVIDIA H200"
    assert {"benchmark", "commit", "command", "date", "environment"} <= written.keys()
