"""``llamavid judge rejudge`` on lmms-eval 0.7.3 output folders (hand-built and genuine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llamavid_eval.judges.__main__ import main
from llamavid_eval.judges.testing import FakeChatServer

ROOT = Path(__file__).resolve().parents[1]
QA = [
    ("What is the man doing?", "running", "The man is running."),
    ("What animal is shown?", "cat", "A dog."),
    ("What color is the car?", "red", "It is red."),
]


pytestmark = pytest.mark.usefixtures("judge_env")


def sample_line(doc_id: int, q: str, a: str, p: str, metrics=("gpt_eval_accuracy", "gpt_eval_score")) -> str:
    """One line exactly as lmms-eval 0.7.3's EvaluationTracker.save_results_samples writes it."""
    rec = {"id": f"v{doc_id}", "question": q, "answer": a, "prediction": p}
    line = {
        "doc_id": doc_id,
        "target": a,
        "filtered_resps": p,
        "token_counts": [None],
        "doc_hash": "0" * 64,
        **{m: rec for m in metrics},
        "input": q,
    }
    return json.dumps(line, ensure_ascii=False)


def write_samples(folder: Path, date_id: str, task: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{date_id}_samples_{task}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def output_dir(tmp_path) -> Path:
    """<output_path>/<model>/<date>_<time>_samples_<task>.jsonl: two tasks, two runs, one MCQ task, one model-less run."""
    out = tmp_path / "lmms-out"
    model = out / "org__llama-vid-7b"
    for date_id in ("20250101_120000", "20250102_130000"):
        write_samples(model, date_id, "msvd_qa", [sample_line(i, *qa) for i, qa in enumerate(QA)])
        write_samples(model, date_id, "msrvtt_qa", [sample_line(i, *qa) for i, qa in enumerate(QA[:2])])
    mcq = json.dumps({"doc_id": 0, "target": "B", "filtered_resps": "B", "exact_match": 1.0, "input": "Pick"})
    write_samples(model, "20250101_120000", "ucf_crime_mcq", [mcq])
    write_samples(out, "20250103_000000", "msvd_qa", [sample_line(0, *QA[1])])  # model without a name
    (model / "20250101_120000_results.json").write_text(
        json.dumps({"results": {"msvd_qa": {"gpt_eval_accuracy,none": 70.0}}})
    )
    return out


def without_ci(results: dict) -> dict:
    """Per-task summaries without their interval (checked on its own where it matters)."""
    return {task: {k: v for k, v in m.items() if k != "accuracy_ci"} for task, m in results.items()}


def test_rejudge_folder_with_several_tasks_and_runs(output_dir, capsys):
    assert main(["rejudge", str(output_dir), "--judge", "exact"]) == 0
    model = output_dir / "org__llama-vid-7b"
    summary = json.loads((model / "20250101_120000_rejudge_exact-match_summary.json").read_text())
    ci = summary["results"]["msvd_qa"]["accuracy_ci"]
    assert ci["estimate"] == pytest.approx(200 / 3) and ci["n"] == 3 and ci["confidence"] == 0.95
    assert ci["low"] <= ci["estimate"] <= ci["high"] and "bootstrap" in ci["method"]
    assert without_ci(summary["results"]) == {
        "msvd_qa": {
            "n": 3,
            "accuracy": pytest.approx(200 / 3),
            "mean_score": pytest.approx(10 / 3),
            "failures": 0,
            "judge": "exact-match",
        },
        "msrvtt_qa": {"n": 2, "accuracy": 50.0, "mean_score": 2.5, "failures": 0, "judge": "exact-match"},
    }
    assert summary["original_results"] == {"msvd_qa": {"gpt_eval_accuracy,none": 70.0}}
    assert summary["rejudge"]["sources"] == [
        "20250101_120000_samples_msrvtt_qa.jsonl",
        "20250101_120000_samples_msvd_qa.jsonl",
        "20250101_120000_samples_ucf_crime_mcq.jsonl",
    ]
    rows = [json.loads(x) for x in (model / "20250101_120000_rejudge_exact-match_items.jsonl").read_text().splitlines()]
    assert len(rows) == 5  # two metric keys holding one record are judged once
    assert rows[0]["metrics"] == ["gpt_eval_accuracy", "gpt_eval_score"]
    assert {(r["task"], r["id"], r["verdict"], r["score"]) for r in rows} >= {
        ("msvd_qa", "v1", False, 0),
        ("msvd_qa", "v0", True, 5),
    }
    assert (model / "20250102_130000_rejudge_exact-match_summary.json").exists()
    loose = json.loads((output_dir / "20250103_000000_rejudge_exact-match_summary.json").read_text())
    assert loose["results"]["msvd_qa"]["accuracy"] == 0.0 and loose["rejudge"]["model_dir"] == ""
    printed = capsys.readouterr().out
    assert "| org__llama-vid-7b/20250101_120000 | msvd_qa | 3 | 66.67 (0.00-100.00) | 3.333 | 0 |" in printed
    assert "Interval: cluster bootstrap (percentile)" in printed
    # re-running ignores its own outputs and rewrites the same numbers
    assert main(["rejudge", str(output_dir), "--judge", "exact"]) == 0
    again = json.loads((model / "20250101_120000_rejudge_exact-match_summary.json").read_text())
    assert again["results"] == summary["results"]


def test_rejudge_one_file_to_out_with_a_local_judge(output_dir, tmp_path, capsys):
    src = output_dir / "org__llama-vid-7b" / "20250102_130000_samples_msvd_qa.jsonl"
    with FakeChatServer() as server:
        local = ["rejudge", str(src), "--judge", "local", "--judge-model", "llama3", "--base-url", server.url]
        rc = main([*local, "--out", str(tmp_path / "re")])
        assert rc == 0 and len(server.calls) == 3
        assert {c.body["model"] for c in server.calls} == {"llama3"}
        rc = main([*local, "--out", str(tmp_path / "re2")])
        assert rc == 0 and len(server.calls) == 3  # second run: all from the cache
    summary = json.loads((tmp_path / "re" / "20250102_130000_rejudge_local-llama3_summary.json").read_text())
    assert without_ci(summary["results"])["msvd_qa"] == {
        "n": 3,
        "accuracy": pytest.approx(200 / 3),
        "mean_score": pytest.approx(11 / 3),
        "failures": 0,
        "judge": "local:llama3",
    }
    assert summary["rejudge"]["settings"]["base_url"] == server.url
    rows = (tmp_path / "re2" / "20250102_130000_rejudge_local-llama3_items.jsonl").read_text().splitlines()
    assert [json.loads(r)["cached"] for r in rows] == [True, True, True]


def test_rejudge_counts_failures_in_the_results(output_dir, tmp_path, monkeypatch, capsys):
    from llamavid_eval.judges.testing import error

    monkeypatch.setenv("LLAMAVID_JUDGE_MAX_RETRIES", "1")
    monkeypatch.setenv("LLAMAVID_JUDGE_PREFLIGHT", "0")
    with FakeChatServer(lambda call: error(500, "down")) as server:
        rejudge = ["rejudge", str(output_dir), "--judge", "local", "--base-url", server.url, "--tasks", "msrvtt_qa"]
        rc = main([*rejudge, "--out", str(tmp_path / "re")])
        calls = len(server.calls)
        # the same failures accepted: exit 0 (the failed items are asked again: failures are never cached)
        assert main([*rejudge, "--out", str(tmp_path / "re2"), "--max-failure-rate", "1"]) == 0
    # exit 1 with the count and the server's reason in the last line
    assert rc == 1 and calls == 2 * 2  # 2 distinct items (runs share predictions) x 2 tries
    last = capsys.readouterr().err.strip().splitlines()
    assert any(
        line.startswith("error: judge local:meta-llama/Meta-Llama-3-8B-Instruct on msrvtt_qa: 4 of 4 judgements failed")
        and "down" in line
        for line in last
    )
    text = next((tmp_path / "re").rglob("20250101_120000_*_summary.json")).read_text()
    summary = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))  # strict parsers
    assert summary["results"]["msrvtt_qa"]["accuracy_ci"]["estimate"] is None  # no item judged: no interval
    assert without_ci(summary["results"]) == {
        "msrvtt_qa": {
            "n": 2,
            "accuracy": None,
            "mean_score": None,
            "failures": 2,
            "judge": "local:meta-llama/Meta-Llama-3-8B-Instruct",
        }
    }


def test_rejudge_errors_are_clear(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["rejudge", str(tmp_path / "empty"), "--judge", "exact"]) == 2
    assert "was lmms-eval run with --log_samples?" in capsys.readouterr().err
    write_samples(tmp_path / "mcq", "20250101_000000", "mcq", [json.dumps({"doc_id": 0, "exact_match": 1})])
    assert main(["rejudge", str(tmp_path / "mcq"), "--judge", "exact"]) == 2
    assert "no judgeable records" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rejudge", str(tmp_path), "--judge", "gpt5"])
    assert "invalid choice: 'gpt5'" in capsys.readouterr().err


def test_cli_help_runs():
    out = subprocess.run(
        [sys.executable, "-m", "llamavid_eval.judges", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "rejudge" in out.stdout and "agree" in out.stdout and "LLAMAVID_JUDGE" in out.stdout


GENERATE = textwrap.dedent('''
    """Run lmms-eval 0.7.3's Python API with a scripted model on a tiny local task; save as its CLI does."""
    import json, sys, textwrap
    from pathlib import Path
    root = Path(sys.argv[1]); tasks = root / "tasks"; tasks.mkdir(parents=True)
    data = [{"id": f"v{i}", "question": q, "answer": a} for i, (q, a, _) in enumerate(json.loads(sys.argv[2]))]
    pred = {q: p for q, _, p in json.loads(sys.argv[2])}
    (tasks / "data.json").write_text(json.dumps(data))
    (tasks / "demo_utils.py").write_text(textwrap.dedent("""
        from llamavid_eval.judges import JudgeRequest, get_judge, summarize
        def doc_to_visual(doc):
            return []
        def doc_to_text(doc, lmms_eval_specific_kwargs=None):
            return doc["question"]
        def process_results(doc, results):
            rec = {"id": doc["id"], "question": doc["question"], "answer": doc["answer"], "prediction": results[0]}
            return {"demo_accuracy": rec, "demo_score": rec}
        def _summary(results):
            judge = get_judge({"judge": "exact"})
            return summarize(judge.judge_many([JudgeRequest(r["question"], r["answer"], r["prediction"]) for r in results]))
        def aggregate_accuracy(results):
            return _summary(results)["accuracy"]
        def aggregate_score(results):
            return _summary(results)["mean_score"]
    """))
    for name in ("demo_qa", "demo_qa_b"):
        (tasks / f"{name}.yaml").write_text(textwrap.dedent(f"""
            task: {name}
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {tasks / 'data.json'}
            test_split: test
            output_type: generate_until
            doc_to_visual: !function demo_utils.doc_to_visual
            doc_to_text: !function demo_utils.doc_to_text
            doc_to_target: answer
            process_results: !function demo_utils.process_results
            generation_kwargs:
              max_new_tokens: 16
            metric_list:
              - metric: demo_accuracy
                aggregation: !function demo_utils.aggregate_accuracy
                higher_is_better: true
              - metric: demo_score
                aggregation: !function demo_utils.aggregate_score
                higher_is_better: true
            metadata:
              version: 0.0
              judge: exact
        """))
    from lmms_eval import evaluator
    from lmms_eval.api.model import lmms
    from lmms_eval.loggers import EvaluationTracker
    from lmms_eval.tasks import TaskManager

    class Scripted(lmms):
        def loglikelihood(self, requests):
            raise NotImplementedError
        def generate_until_multi_round(self, requests):
            raise NotImplementedError
        def generate_until(self, requests):
            return [pred[r.args[0]] for r in requests]

    manager = TaskManager("WARNING", include_path=str(tasks), include_defaults=False)
    for stamp in ("20250101_120000", "20250102_130000"):
        tracker = EvaluationTracker(output_path=str(root / "out"))
        res = evaluator.simple_evaluate(model=Scripted(), model_args="pretrained=org/scripted-video-model",
                                        tasks=["demo_qa", "demo_qa_b"], task_manager=manager, log_samples=True,
                                        evaluation_tracker=tracker, datetime_str=stamp, verbosity="WARNING")
        samples = res.pop("samples")  # what lmms_eval.__main__.cli_evaluate_single does next:
        tracker.save_results_aggregated(results=res, samples=samples, datetime_str=stamp)
        for task_name in res["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
''')


def write_genuine_output(root: Path) -> Path:
    """Run :data:`GENERATE` (lmms-eval in a subprocess) under ``root``; the ``genuine_output`` session
    fixture (conftest) calls it once for every test file that needs real lmms-eval output."""
    script = root / "generate.py"
    script.write_text(GENERATE)
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(root), json.dumps(QA)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "out"


@pytest.mark.slow
def test_rejudge_a_genuine_lmms_eval_output(genuine_output, tmp_path):
    model = genuine_output / "org__scripted-video-model"
    names = sorted(p.name for p in model.iterdir())
    assert names == [
        "20250101_120000_results.json",
        "20250101_120000_samples_demo_qa.jsonl",
        "20250101_120000_samples_demo_qa_b.jsonl",
        "20250102_130000_results.json",
        "20250102_130000_samples_demo_qa.jsonl",
        "20250102_130000_samples_demo_qa_b.jsonl",
    ]
    with FakeChatServer() as server:
        assert (
            main(
                [
                    "rejudge",
                    str(genuine_output),
                    "--judge",
                    "local",
                    "--base-url",
                    server.url,
                    "--out",
                    str(tmp_path / "llm"),
                ]
            )
            == 0
        )
        assert len(server.calls) == 3  # 2 runs x 2 tasks x 2 metric keys, but only 3 distinct items
    assert main(["rejudge", str(genuine_output), "--judge", "exact", "--out", str(tmp_path / "exact")]) == 0
    exact = json.loads(
        (
            tmp_path / "exact" / "org__scripted-video-model" / "20250102_130000_rejudge_exact-match_summary.json"
        ).read_text()
    )
    # the exact judge re-computes what the run's own (exact-judged) aggregation logged
    for task in ("demo_qa", "demo_qa_b"):
        original = exact["original_results"][task]
        assert exact["results"][task]["accuracy"] == pytest.approx(original["demo_accuracy,none"])
        assert exact["results"][task]["mean_score"] == pytest.approx(original["demo_score,none"])
        assert exact["results"][task]["n"] == 3
    llm = json.loads(
        (
            tmp_path
            / "llm"
            / "org__scripted-video-model"
            / "20250101_120000_rejudge_local-meta-llama-Meta-Llama-3-8B-Instruct_summary.json"
        ).read_text()
    )
    assert without_ci(llm["results"])["demo_qa"] == {
        "n": 3,
        "accuracy": pytest.approx(200 / 3),
        "mean_score": pytest.approx(11 / 3),
        "failures": 0,
        "judge": "local:meta-llama/Meta-Llama-3-8B-Instruct",
    }


def test_ctrl_c_keeps_every_verdict_received_and_the_rerun_asks_only_the_rest(tmp_path, capsys):
    """Without a real server (the slow tests use one): a Ctrl-C mid-run returns 130 at once with the count."""
    import signal
    import sqlite3
    import threading
    import time

    from llamavid_eval.judges.testing import reply

    lines = [sample_line(i, f"q{i}", "a", f"p{i}") for i in range(20)]
    write_samples(tmp_path / "run" / "m", "20250101_000000", "demo", lines)
    cache = tmp_path / "cache"

    def stored() -> int:
        try:
            with sqlite3.connect(cache / "judgements.sqlite3") as con:
                return con.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    def ctrl_c() -> None:  # once two verdicts are cached, while 18 are still to come
        while stored() < 2:
            time.sleep(0.01)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    sent: list[float] = []
    with FakeChatServer(lambda call: reply("{'pred': 'yes', 'score': 5}", delay=0.3)) as server:
        args = ["rejudge", str(tmp_path / "run"), "--judge", "local", "--base-url", server.url, "--cache", str(cache),
                "--concurrency", "2", "--out", str(tmp_path / "out")]  # fmt: skip
        threading.Thread(target=ctrl_c, daemon=True).start()
        assert main(args) == 130
        took = time.monotonic() - sent[0]
        last = capsys.readouterr().err.strip().splitlines()[-1]
        kept = stored()
        assert took < 1.0 and kept >= 2 and last.startswith("interrupted by SIGINT: judge local:")
        assert f"has {kept} verdict(s) in the cache and {20 - kept} item(s) left; rerun the same command" in last
        assert not list((tmp_path / "out").rglob("*_items.jsonl"))
        time.sleep(0.4)  # the abandoned requests end on the server
        asked = len(server.calls)
        assert main(args) == 0 and len(server.calls) - asked == 20 - kept
