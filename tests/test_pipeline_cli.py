"""The whole pipeline through the real command lines, on CPU, with the tiny checkpoint.

raw public layouts -> ``llamavid prepare`` -> ``lmms-eval --model llamavid --tasks ...`` (no
``--include_path``) judged by a local OpenAI-compatible endpoint on loopback -> ``llamavid judge
rejudge`` -> ``llamavid results table``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_tasks_support import animal_kingdom_raw, ucf_raw, video_qa_raw

from llamavid_eval.judges.testing import FakeChatServer

BIN = Path(sys.executable).parent
TASKS = ["msvd_qa", "ucf_crime", "ucf_crime_judged", "animal_kingdom"]


def run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "Error during evaluation" not in log, log[-5000:]
    return log


def prepare_three_tasks(tmp_path, env: dict[str, str]) -> None:
    """``prepare`` of msvd_qa, ucf_crime and animal_kingdom from their raw layouts, as a user runs it."""
    qa, videos = video_qa_raw(tmp_path / "msvd_raw")
    run([str(BIN / "llamavid"), "prepare", "msvd_qa", "--qa", str(qa), "--videos", str(videos)], env)
    ucf = ucf_raw(tmp_path / "ucf_raw")
    test_list = ucf / "Anomaly_Detection_splits" / "Anomaly_Test.txt"
    prepare = [sys.executable, "-m", "llamavid_eval.tasks.prepare"]
    run([*prepare, "ucf_crime", "--videos", str(ucf / "Videos"), "--test-list", str(test_list)], env)
    annotations, ak_videos = animal_kingdom_raw(tmp_path / "ak_raw")
    run([*prepare, "animal_kingdom", "--annotations", str(annotations), "--videos", str(ak_videos)], env)


@pytest.mark.slow
def test_prepare_evaluate_judge_rejudge_and_tabulate(tiny_release, tmp_path):
    root = tmp_path / "data"
    env = {**os.environ, "LLAMAVID_DATA_ROOT": str(root), "LLAMAVID_JUDGE_CACHE": "off"}
    prepare_three_tasks(tmp_path, env)

    out = tmp_path / "out"
    with FakeChatServer() as judge:
        env.update(LLAMAVID_JUDGE="local", LLAMAVID_JUDGE_BASE_URL=judge.url, LLAMAVID_JUDGE_MODEL="test-judge")
        env.update(LLAMAVID_JUDGE_EXAM="0")  # the word-matching test judge is unfit by design (judge exam)
        model_args = (
            f"pretrained={tiny_release.checkpoint},qformer_tokenizer={tiny_release.bert_tokenizer},dtype=fp32,fps=1"
        )
        command = [str(BIN / "lmms-eval"), "--model", "llamavid", "--model_args", model_args, "--tasks",
                   ",".join(TASKS), "--batch_size", "4", "--gen_kwargs", "max_new_tokens=6", "--output_path",
                   str(out), "--log_samples"]  # fmt: skip
        run(command, env)
        judged_items = len(judge.calls)
    (results_file,) = out.rglob("*_results.json")
    results = json.loads(results_file.read_text())["results"]
    assert results["msvd_qa"]["judge_failures,none"] == 0
    assert 0 <= results["msvd_qa"]["accuracy,none"] <= 100
    assert 0 <= results["ucf_crime"]["accuracy,none"] <= 100
    assert 0 <= results["ucf_crime"]["unmapped,none"] <= 8  # the 8 test videos of the raw layout
    assert results["animal_kingdom"]["judge_failures,none"] == 0
    # every judged item went to the endpoint exactly once (identical triples are asked once)
    triples = set()
    for task in ("msvd_qa", "ucf_crime_judged", "animal_kingdom"):
        (samples,) = out.rglob(f"*_samples_{task}.jsonl")
        for line in samples.read_text().splitlines():
            record = json.loads(line)["accuracy"]
            triples.add((record["question"], record["answer"], record["prediction"]))
    assert judged_items == len(triples) > 0

    env["LLAMAVID_JUDGE"] = "exact"
    run([sys.executable, "-m", "judges", "rejudge", str(out), "--judge", "exact"], env)
    summaries = list(out.rglob("*_rejudge_*_summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert {"msvd_qa", "animal_kingdom", "ucf_crime_judged"} <= set(summary["results"])
    assert all(row["failures"] == 0 for row in summary["results"].values())

    table = run([sys.executable, "-m", "results", "table", str(out), "--out", str(tmp_path / "board")], env)
    assert "msvd_qa/accuracy" in table and "measured" in table
    assert (tmp_path / "board" / "leaderboard.html").is_file() or list((tmp_path / "board").glob("*.html"))
