"""End to end through the real ``lmms-eval`` CLI on CPU: model found by entry point, tiny video task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from media import coloured_frames, write_video

TASK_YAML = """\
task: tiny_video_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 5
  until: ["</s>"]
process_results: !function utils.process_results
metric_list:
  - metric: answered
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = """\
def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"answered": float(bool(results[0].strip()))}
"""


def lmms_eval_cli() -> str:
    return str(Path(sys.executable).parent / "lmms-eval")


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-task")
    docs = []
    for index in range(3):
        path = write_video(root / "videos" / f"v{index}.mp4", coloured_frames(3, size=32, seed=index))
        docs.append({"id": index, "video": str(path), "question": f"What colour is shape {index}?", "answer": "red"})
    data = root / "test.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    task_dir = root / "task"
    task_dir.mkdir()
    (task_dir / "tiny_video_qa.yaml").write_text(TASK_YAML.format(data=data))
    (task_dir / "utils.py").write_text(TASK_UTILS)
    return task_dir


@pytest.mark.slow
def test_lmms_eval_cli_runs_llamavid_on_a_video_task(tiny_release, tiny_task, tmp_path):
    out = tmp_path / "out"
    args = (
        f"pretrained={tiny_release.checkpoint},qformer_tokenizer={tiny_release.bert_tokenizer},"
        "dtype=fp32,fps=1,compile=True"  # on the CPU: the static-cache decoder without CUDA graphs
    )
    command = [
        lmms_eval_cli(),
        "--model",
        "llamavid",
        "--model_args",
        args,
        "--tasks",
        "tiny_video_qa",
        "--batch_size",
        "2",
        "--include_path",
        str(tiny_task),
        "--limit",
        "2",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    log = run.stdout[-4000:] + run.stderr[-4000:]
    assert run.returncode == 0 and "Error during evaluation" not in run.stdout + run.stderr, log
    results = list(out.rglob("*_results.json"))
    assert len(results) == 1
    payload = json.loads(results[0].read_text())
    assert payload["results"]["tiny_video_qa"]["answered,none"] == 1.0
    samples = [json.loads(line) for path in out.rglob("*_samples_tiny_video_qa.jsonl") for line in path.open()]
    assert len(samples) == 2 and all(sample["filtered_resps"][0].strip() for sample in samples)


def test_unknown_model_argument_is_rejected_by_name(tiny_release):
    from llamavid_eval.model.lmms_backend import LlamaVid

    with pytest.raises(ValueError, match="frame_rate"):
        LlamaVid(pretrained=str(tiny_release.checkpoint), frame_rate=2)
    with pytest.raises(ValueError, match="compile='maybe' is not a boolean"):
        LlamaVid(pretrained=str(tiny_release.checkpoint), compile="maybe")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"pretrained": None, "pretraind": "x"},
            r"pretrained=<checkpoint folder or hub id> is required; unknown .*\['pretraind'\]",
        ),
        ({"fps": "0"}, "fps='0': give a finite number above 0"),
        ({"fps": "inf"}, "fps='inf': give a finite number above 0"),
        ({"max_frames": "0"}, "max_frames='0': give a finite number of at least 1"),
        ({"decode_workers": "-1"}, "decode_workers='-1': give a finite number of at least 0"),
        ({"vision_batch_size": "0"}, "vision_batch_size='0'"),
        ({"batch_size": "auto"}, "--batch_size auto is not supported"),
        ({"batch_size": "0"}, "batch_size='0'"),
        ({"image_size": "300"}, "image_size='300': the LLaMA-VID towers take 224 or 336"),
        ({"lora": "/no/such/adapter"}, "lora=/no/such/adapter: no such folder"),
    ],
)
def test_bad_model_arguments_are_refused_before_the_weights_load(arguments, message, monkeypatch):
    """A bad value must not wait for minutes of loading and then blame a video or a torch internal."""
    import llamavid_eval.model.lmms_backend as backend

    monkeypatch.setattr(backend, "load_llamavid", lambda *a, **k: pytest.fail("the weights were loaded"))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        backend.LlamaVid(**{"pretrained": "/ckpt", **arguments})


def test_entry_point_registers_model_and_tasks():
    from lmms_eval.models import MODEL_REGISTRY_V2
    from lmms_eval.tasks import TaskManager

    resolved = MODEL_REGISTRY_V2.resolve("llamavid")
    assert resolved.class_path == "llamavid_eval.model.lmms_backend.LlamaVid"
    assert "msvd_qa" in TaskManager().all_tasks  # no include_path given
