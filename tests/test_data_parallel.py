"""Data parallel evaluation on the CPU: two ``torchrun`` processes give a single process's answers.

lmms-eval shards documents by rank and gathers the results on rank 0; the backend must put each
rank's model on that rank's device (here the CPU, gloo) and answer only its shard. Multi-GPU
machines are not needed to keep this path working.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_tasks_support import video_qa_raw

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _evaluate(launcher: list[str], model_args: str, out: Path, env: dict[str, str]) -> tuple[dict[int, str], str]:
    command = [
        *launcher,
        "--model",
        "llamavid",
        "--model_args",
        model_args,
        "--tasks",
        "msvd_qa",
        "--batch_size",
        "2",
        "--gen_kwargs",
        "max_new_tokens=4",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "Error during evaluation" not in log, log[-5000:]
    (samples,) = out.rglob("*_samples_msvd_qa.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {row["doc_id"]: row["filtered_resps"] for row in rows}, log


@pytest.mark.slow
def test_two_cpu_processes_answer_like_one(tiny_release, tmp_path):
    env = {
        **os.environ,
        "LLAMAVID_DATA_ROOT": str(tmp_path / "data"),
        "LLAMAVID_JUDGE": "exact",
        "LLAMAVID_JUDGE_CACHE": "off",
    }
    qa, videos = video_qa_raw(tmp_path / "raw")
    subprocess.run(
        [sys.executable, "-m", "llamavid_eval.tasks.prepare", "msvd_qa", "--qa", str(qa), "--videos", str(videos)],
        check=True,
        env=env,
        capture_output=True,
    )
    model_args = (
        f"pretrained={tiny_release.checkpoint},qformer_tokenizer={tiny_release.bert_tokenizer},"
        "dtype=fp32,decode_workers=0"
    )
    single, _ = _evaluate([str(BIN / "lmms-eval")], model_args, tmp_path / "one", env)
    torchrun = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "lmms_eval"]
    parallel, log = _evaluate(torchrun, model_args, tmp_path / "two", {**env, "ACCELERATE_USE_CPU": "true"})
    assert "Running on rank 1" in log  # two ranks really ran
    assert parallel == single and len(single) == 4
