"""The judge exam: its data, grading (always-yes, always-no, coin-flip and exact are unfit; a judge that answers
right is fit), the ``llamavid judge exam`` command and its exit status, the gate before judging (remembered per
process and on disk), exam figures in the swap report, and the real SmolLM2 judge sitting the exam."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from test_judges_swap import runs_folder
from test_tasks_support import video_qa_raw

from llamavid_eval.judges import exam as exam_module
from llamavid_eval.judges.__main__ import main
from llamavid_eval.judges.backends.exact import ExactMatchJudge
from llamavid_eval.judges.base import Judge, Judgement, JudgeRequest
from llamavid_eval.judges.exam import (
    EXACT_NOTE,
    EXAM_KEY,
    OFF_NOTE,
    JudgeUnfit,
    Thresholds,
    exam_notes,
    examine,
    run_exam,
)
from llamavid_eval.judges.exam_data import TOPICS, ExamError, load_exam
from llamavid_eval.judges.factory import resolve_settings
from llamavid_eval.judges.testing import Call, FakeChatServer, Response, reply
from llamavid_eval.results.load import load_run

EXAM = load_exam()
COIN = random.Random(0)  # the coin-flip judge's seeded coin
TRUTH = {(i.request.question, i.request.answer, i.request.prediction.strip()): i.expect for i in EXAM.items}


@pytest.fixture(autouse=True)
def exam_on(judge_env):
    judge_env.setenv("LLAMAVID_JUDGE_EXAM", "1")
    judge_env.setenv("LLAMAVID_JUDGE_MAX_RETRIES", "0")
    exam_module._REPORTS.clear()
    yield judge_env
    exam_module._REPORTS.clear()


class Policy(Judge):
    """A judge that answers each item by ``policy(request)`` (None: fails the item)."""

    backend = "policy"

    def __init__(self, policy: Callable[[JudgeRequest], bool | None]) -> None:
        super().__init__("policy")
        self.policy = policy

    def judge_many(self, requests: Sequence[JudgeRequest]) -> list[Judgement]:
        out = []
        for r in requests:
            verdict = self.policy(r)
            if verdict is None:
                out.append(Judgement.failure("no reply: scripted failure", backend=self.backend, model=self.model))
            else:
                out.append(Judgement(verdict, 5 if verdict else 0, str(verdict), self.backend, self.model))
        return out


def truth(r: JudgeRequest) -> bool:
    return TRUTH[(r.question, r.answer, r.prediction.strip())]


def test_the_exam_is_versioned_balanced_and_covers_our_answer_kinds():
    assert EXAM.version.startswith("exam-v1+") and len(EXAM.items) >= 150
    yes = sum(i.expect for i in EXAM.items)
    assert yes == len(EXAM.items) - yes  # balanced
    assert {i.topic for i in EXAM.items} == set(TOPICS)
    assert all(EXAM.rules[k] for k in EXAM.expects)
    assert {k for k, e in EXAM.expects.items() if e} == {"identical", "case-article", "synonym", "paraphrase"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('expect: "yes"', "expect: yes", 1), 'expect must be the quoted text "yes" or "no"'),
        (
            lambda t: t.replace('answer: "yes", prediction: "yes"', "answer: yes, prediction: yes"),
            "must be quoted text",
        ),
        (lambda t: t.replace('topic: "colour"', 'topic: "color"', 1), "unknown topic 'color'"),
        (lambda t: t.replace('prediction: "a violin"', 'prediction: "a guitar"'), "occurs twice"),
    ],
)
def test_a_malformed_exam_file_is_refused(tmp_path, edit, message):
    path = tmp_path / "exam.yaml"
    path.write_text(edit(Path(EXAM.source).read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ExamError, match=message):
        load_exam(path)


def test_editing_an_item_changes_the_exam_version(tmp_path):
    path = tmp_path / "exam.yaml"
    path.write_text(Path(EXAM.source).read_text(encoding="utf-8").replace('"a violin"', '"a cello"'), encoding="utf-8")
    assert load_exam(path).version != EXAM.version and load_exam(path).version.startswith("exam-v1+")


@pytest.mark.parametrize(
    ("judge", "side"),
    [
        (Policy(lambda r: True), "must-be-no side"),
        (Policy(lambda r: False), "must-be-yes side"),
        (Policy(lambda r, rng=COIN: rng.random() < 0.5), "must-be-"),
        (ExactMatchJudge(), "must-be-yes side: 95% lower bound 48.8% < 85% (wrong: synonym 24/24"),
    ],
    ids=["always-yes", "always-no", "coin-flip", "exact"],
)
def test_yes_sayers_no_sayers_coin_flippers_and_exact_match_are_unfit(judge, side):
    report = run_exam(judge)
    assert report["fit"] is False and report["verdict"].startswith("unfit: ") and side in report["verdict"]


def test_a_judge_that_answers_right_is_fit_and_a_few_slips_are_tolerated():
    assert run_exam(Policy(truth))["verdict"] == "fit"
    slips = {i.request for i in EXAM.items if i.kind == "hedge"}
    report = run_exam(Policy(lambda r: (r in slips) or truth(r)))  # says yes to every hedge
    assert report["sides"]["no"]["right"] == 84 - 12 and not report["fit"]
    assert "must-be-no side" in report["verdict"] and "hedge 12/12" in report["verdict"]
    hedge = next(k for k in report["kinds"] if k["kind"] == "hedge")
    assert hedge["examples"][0]["said"] == "yes" and hedge["examples"][0]["expected"] == "no"


def test_failures_are_not_verdicts_and_too_many_make_a_judge_unfit():
    flaky = {i.request for i in EXAM.items[::20]}  # 9 of 168 (5.4%)
    report = run_exam(Policy(lambda r: None if r in flaky else truth(r)))
    assert report["failures"]["failed"] == len(flaky) and report["sides"]["yes"]["accuracy"]["estimate"] == 1.0
    assert "judgements failed (5.4% > 2%): no reply: scripted failure" in report["verdict"]
    assert run_exam(Policy(lambda r: None if r in flaky else truth(r)), thresholds=Thresholds(0.85, 0.06))["fit"]
    # right on every item it answered, but only 5 of each side: the bound is low for want of items, not errors
    answered = {i.request for i in EXAM.items[:5] + EXAM.items[-5:]}  # the file's first five are yes, last five no
    report = run_exam(Policy(lambda r: truth(r) if r in answered else None), thresholds=Thresholds(0.85, 1.0))
    assert "(wrong: none; only 5 of 84 answered, too few for the bound)" in report["verdict"]


def oracle(call: Call) -> Response:
    """A loopback judge server that answers every exam item right (and yes to anything else: the preflight)."""
    ok = TRUTH.get((call.field("Question"), call.field("Correct Answer"), call.field("Predicted Answer")), True)
    return reply(f"{{'pred': '{'yes' if ok else 'no'}', 'score': {5 if ok else 0}}}")


def yes_man(call: Call) -> Response:
    return reply("{'pred': 'yes', 'score': 4}")


def test_exam_command_fit_exits_0_unfit_exits_1_with_the_reason_last(capsys):
    with FakeChatServer(oracle) as good, FakeChatServer(yes_man) as bad:
        assert main(["exam", "--judge", f"local:good@{good.url}"]) == 0
        text = capsys.readouterr().out
        assert main(["exam", "--judge", f"local:yes@{bad.url}", "--json"]) == 1
        captured = capsys.readouterr()
    lines = text.strip().splitlines()
    assert lines[-1] == "fit" and lines[0].startswith(f"Judge exam {EXAM.version} (168 items")
    assert "must be yes: 84 of 84 right = 100.0% (95% CI 95.6-100.0), 0 failed" in text
    report = json.loads(captured.out)
    assert report["fit"] is False and report["sides"]["no"]["right"] == 0 and report["exam"] == EXAM.version
    assert captured.err.strip().splitlines()[-1].startswith("unfit: must-be-no side: 95% lower bound 0.0% < 85%")


def test_exact_sits_the_exam_on_request_and_fails_it(capsys):
    assert main(["exam", "--judge", "exact"]) == 1
    out = capsys.readouterr().out
    assert "must be yes: 50 of 84 right" in out and "Kinds it gets wrong:" in out
    assert out.strip().splitlines()[-1].startswith("unfit: must-be-yes side")


def settings_for(url: str, **config):
    return resolve_settings({"judge": "local", "judge_base_url": url, "judge_model": "judge", **config})


def test_the_gate_stops_an_unfit_judge_with_its_figures_and_the_way_out():
    with FakeChatServer(yes_man) as server:
        with pytest.raises(JudgeUnfit) as caught:
            examine(settings_for(server.url))
        record = examine(settings_for(server.url), allow_unfit=True)
    message = str(caught.value)
    assert "The judge is unfit: local:judge" in message and "must be yes 100.0%" in message
    assert "unfit: must-be-no side" in message and "LLAMAVID_JUDGE_EXAM=0" in message and "--allow-unfit" in message
    assert record["allowed_unfit"] and not record["fit"] and record["exam"] == EXAM.version
    assert len(server.calls) == len(EXAM.items)  # the second examine remembered the first report
    # the command it names reaches the same judge: model, URL and all
    assert f"Its wrong verdicts: llamavid judge exam --judge 'local:judge@{server.url}'" in message


def test_the_gate_remembers_a_report_on_disk_and_skips_exact_and_a_switched_off_exam(tmp_path):
    with FakeChatServer(oracle) as server:
        record = examine(settings_for(server.url))
        exam_module._REPORTS.clear()  # a new process: the report is read back from beside the verdict cache
        assert examine(settings_for(server.url)) == record
    assert record["fit"] and record["summary"].startswith(f"judge exam {EXAM.version}: fit; must be yes 100.0%")
    assert len(server.calls) == len(EXAM.items)
    assert examine(resolve_settings({"judge": "exact"})) == {
        "examined": False,
        "judge": "exact-match",
        "note": EXACT_NOTE,
    }
    off = examine(resolve_settings({"judge": "local", "judge_model": "judge"}, env={"LLAMAVID_JUDGE_EXAM": "0"}))
    assert off == {"examined": False, "judge": "local:judge", "note": OFF_NOTE}


def test_swap_examines_every_judge_and_reports_the_figures(tmp_path, capsys):
    source = runs_folder(tmp_path)
    out = tmp_path / "report"
    with FakeChatServer(oracle) as good, FakeChatServer(yes_man) as bad:
        assert main(["swap", str(source), "--judges", f"exact,local:yes@{bad.url}", "--out", str(out)]) == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == "error: unfit judge (above); nothing was judged"
        judges = f"exact,local:good@{good.url},local:yes@{bad.url}"
        assert main(["swap", str(source), "--judges", judges, "--out", str(out), "--allow-unfit", "--no-plots"]) == 0
    markdown = (out / "swap_report.md").read_text()
    assert "## Judge exam" in markdown and f"exact-match | - | - | - | - | {EXACT_NOTE}" in markdown
    assert (
        f"local:good | {EXAM.version} | 100.0 (95.6 to 100.0, n=84) | 100.0 (95.6 to 100.0, n=84) | 0 of 168 | fit"
        in markdown
    )
    assert "unfit: must-be-no side" in markdown and "(used anyway: --allow-unfit)" in markdown
    exams = json.loads((out / "swap_report.json").read_text())["exams"]
    assert exams["local:good"]["fit"] and exams["local:yes"]["allowed_unfit"]
    (tmp_path / "a_file").write_text("")
    calls = len(good.calls)
    for command in ("swap", "rejudge"):  # a file where the output folder goes: refused before any judging
        judges = ["--judges", f"exact,local:good@{good.url}"] if command == "swap" else ["--judge", "exact"]
        with pytest.raises(SystemExit) as refused:
            main([command, str(source), *judges, "--out", str(tmp_path / "a_file")])
        assert refused.value.code == 2 and "is a file; name a folder" in capsys.readouterr().err
    assert len(good.calls) == calls


def test_rejudge_records_the_exam(tmp_path):
    source = runs_folder(tmp_path)
    with FakeChatServer(oracle) as server:
        assert main(["rejudge", str(source), "--judge", "local", "--judge-model", "m", "--base-url", server.url]) == 0
    summary = json.loads(next(source.rglob("*_rejudge_*_summary.json")).read_text())
    assert summary["rejudge"]["settings"]["exam"]["fit"] is True


def test_the_real_smollm2_judge_sits_the_exam(smollm2_gguf, tmp_path, capsys):
    """End to end on the real model; one batch of a few exam items keeps it cheap. Not asserted: which verdict."""
    path = tmp_path / "mini.yaml"
    kinds = {k: [i for i in EXAM.items if i.kind == k][:2] for k in ("identical", "synonym", "other-thing", "hedge")}
    body = {
        "version": "exam-mini",
        "kinds": {
            k: {
                "expect": "yes" if EXAM.expects[k] else "no",
                "rule": EXAM.rules[k],
                "items": [
                    {
                        "topic": i.topic,
                        "question": i.request.question,
                        "answer": i.request.answer,
                        "prediction": i.request.prediction,
                    }
                    for i in items
                ],  # fmt: skip
            }
            for k, items in kinds.items()
        },
    }
    path.write_text(json.dumps(body), encoding="utf-8")
    rc = main(["exam", "--judge", f"hf:{smollm2_gguf}", "--exam", str(path), "--batch-size", "8"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "\nmust be yes: " in out and "\nmust be no:  " in out, out
    assert "(95% CI " in out or "no item answered" in out, out
    assert lines[-1] == "fit" or lines[-1].startswith("unfit: ")
    assert rc == (0 if lines[-1] == "fit" else 1)


def _lmms_eval(tiny_release, tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    """``lmms-eval --model llamavid --tasks msvd_qa`` on the few prepared items, judged as ``env`` says."""
    root, out = tmp_path / "data", tmp_path / "out"
    qa, videos = video_qa_raw(tmp_path / "raw")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "LLAMAVID_DATA_ROOT": str(root), **env}
    prepare = [str(bin_dir / "llamavid"), "prepare", "msvd_qa", "--qa", str(qa), "--videos", str(videos)]
    subprocess.run(prepare, env=env, check=True, capture_output=True, timeout=300)
    model_args = f"pretrained={tiny_release.checkpoint},qformer_tokenizer={tiny_release.bert_tokenizer},dtype=fp32"
    command = [str(bin_dir / "lmms-eval"), "--model", "llamavid", "--model_args", model_args, "--tasks", "msvd_qa",
               "--batch_size", "2", "--output_path", str(out), "--log_samples"]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300), out


@pytest.mark.slow
def test_lmms_eval_stops_before_the_video_model_when_the_judge_is_unfit(tiny_release, tmp_path):
    with FakeChatServer(yes_man) as server:
        env = {"LLAMAVID_JUDGE": "local", "LLAMAVID_JUDGE_BASE_URL": server.url, "LLAMAVID_JUDGE_MODEL": "yes-man",
               "LLAMAVID_JUDGE_CACHE": str(tmp_path / "cache"), "LLAMAVID_JUDGE_EXAM": "1"}  # fmt: skip
        run, out = _lmms_eval(tiny_release, tmp_path, env)
    log = run.stdout + run.stderr
    assert "The judge is unfit: local:yes-man" in log and "unfit: must-be-no side" in log, log[-4000:]
    assert "LLAMAVID_JUDGE_EXAM=0" in log, log[-4000:]
    assert "Running generate_until requests" not in log and not list(out.rglob("*_samples_*.jsonl")), log[-4000:]


@pytest.mark.slow
def test_lmms_eval_with_the_exam_off_runs_and_records_the_judge_as_not_examined(tiny_release, tmp_path):
    with FakeChatServer(yes_man) as server:
        env = {"LLAMAVID_JUDGE": "local", "LLAMAVID_JUDGE_BASE_URL": server.url, "LLAMAVID_JUDGE_MODEL": "yes-man",
               "LLAMAVID_JUDGE_CACHE": "off", "LLAMAVID_JUDGE_EXAM": "0"}  # fmt: skip
        run, out = _lmms_eval(tiny_release, tmp_path, env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results_file = next(out.rglob("*_results.json"))
    results = json.loads(results_file.read_text())
    assert results["configs"]["msvd_qa"]["metadata"]["exam"] == {
        "examined": False,
        "judge": "local:yes-man",
        "note": OFF_NOTE,
    }
    assert f"msvd_qa: judge local:yes-man {OFF_NOTE}" in load_run(results_file).notes  # the leaderboard's notes
    samples = next(out.rglob("*_samples_msvd_qa.jsonl")).read_text().splitlines()
    assert len(server.calls) == len(samples) > 0  # every item judged by the unexamined judge, nothing else asked


def test_leaderboard_notes_carry_the_exam_record_of_each_task():
    fit = {"examined": True, "summary": "judge exam exam-v1+x: fit; must be yes 98.8% (93.6-99.8)", "fit": True}
    unfit = {"examined": True, "summary": "judge exam exam-v1+x: unfit; must be yes 50.0% (39.5-60.5)",
             "allowed_unfit": True}  # fmt: skip
    configs = {
        "msvd_qa": {"metadata": {"judge": "local", EXAM_KEY: fit}},
        "msrvtt_qa": {"metadata": {EXAM_KEY: unfit}},
        "llamavid_demo": {"metadata": {EXAM_KEY: {"examined": False, "judge": "exact-match", "note": EXACT_NOTE}}},
        "ucf_crime": {"metadata": {"judge": "local"}},  # built before the exam existed: no note
        "animal_kingdom": {"metadata": {EXAM_KEY: {"examined": False, "judge": "local:m", "note": OFF_NOTE}}},
    }
    assert exam_notes(configs) == [
        f"animal_kingdom: judge local:m {OFF_NOTE}",
        "msrvtt_qa: judge exam exam-v1+x: unfit; must be yes 50.0% (39.5-60.5) (unfit, used anyway)",
        "msvd_qa: judge exam exam-v1+x: fit; must be yes 98.8% (93.6-99.8)",
    ]
