"""``llamavid judge swap``: three runs' stored predictions re-judged by ``exact`` and two judges on loopback
servers (one of them failing on some items), one report with the numbers, exit codes by failure rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamavid_eval.judges import swap
from llamavid_eval.judges.__main__ import main
from llamavid_eval.judges.preflight import PROBE
from llamavid_eval.judges.testing import Call, FakeChatServer, Response, error, word_judge

FAIL = "JUDGE_FAIL"
QUESTIONS = [
    ("what is the man doing?", "cooking"),
    ("what animal is shown?", "dog"),
    ("who runs?", "girl"),
    ("what color is the car?", "red"),
    ("where is this?", "beach"),
    ("what is he holding?", "cup"),
]
#: Predictions of three runs. "hotdog" / "cupboard" contain the answer: right for the word judge of the
#: loopback server (substring), wrong for exact match (whole words). Right per run: exact 3, 4, 0; word 4, 5, 1.
RUNS = {
    "20250101_100000": ["cooking", "hotdog", "boy", "red", "beach", "plate"],
    "20250102_100000": ["cooking", "dog", "girl", "red", "sea", "cupboard"],
    "20250103_100000": ["eating", "hotdog", "boy", f"blue {FAIL}", "sea", "plate"],
}


@pytest.fixture(autouse=True)
def clean_env(judge_env):
    judge_env.setenv("LLAMAVID_JUDGE_MAX_RETRIES", "0")


def runs_folder(root: Path) -> Path:
    """One lmms-eval output folder holding three runs of a judged task (records name their video)."""
    model = root / "out" / "org__model"
    model.mkdir(parents=True)
    for stamp, predictions in RUNS.items():
        lines = []
        for i, ((question, answer), prediction) in enumerate(zip(QUESTIONS, predictions, strict=True)):
            record = {"id": i, "question": question, "answer": answer, "prediction": prediction, "video": f"v{i // 2}"}
            lines.append({"doc_id": i, "target": answer, "accuracy": record, "mean_score": record})
        (model / f"{stamp}_samples_msvd_qa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root / "out"


def flaky(call: Call) -> Response:
    """The word judge, but an HTTP 500 for one prediction (a judge that fails on some items)."""
    if FAIL in call.field("Predicted Answer"):
        return error(500, "model crashed on this item")
    return word_judge(call)


def test_parse_judges():
    specs = swap.parse_judges("openai:gpt-4.1-mini, local:meta-llama/Meta-Llama-3-8B-Instruct@http://h:1/v1,exact")
    assert [s.overrides() for s in specs] == [
        {"backend": "openai", "model": "gpt-4.1-mini"},
        {"backend": "local", "model": "meta-llama/Meta-Llama-3-8B-Instruct", "base_url": "http://h:1/v1"},
        {"backend": "exact"},
    ]
    with pytest.raises(ValueError, match="unknown backend 'gpt5'"):
        swap.parse_judges("gpt5,exact")
    with pytest.raises(ValueError, match="at least two"):
        swap.parse_judges("exact")
    assert swap.parse_spec("Local:m", "--judge").backend == "local"  # as LLAMAVID_JUDGE=Local is
    for entry, message in [
        ("exact:foo", "exact match takes no model"),
        ("exact@http://h:1/v1", "exact match takes no model"),
        ("local:m@http://h:1/v1, exact", "holds a space"),  # a list given where one judge goes
    ]:
        with pytest.raises(ValueError, match=message):
            swap.parse_spec(entry, "--judge")
    with pytest.raises(ValueError, match="must be a finite number"):
        swap.resolve_settings(env={"LLAMAVID_JUDGE_MAX_FAILURE_RATE": "nan"})


def test_swap_report_with_a_failing_judge(tmp_path, capsys):
    source = runs_folder(tmp_path)
    out = tmp_path / "report"
    with FakeChatServer() as good, FakeChatServer(flaky) as bad:
        judges = f"exact,local:good@{good.url},local:flaky@{bad.url}"
        rc = main(["swap", str(source), "--judges", judges, "--out", str(out)])
        captured = capsys.readouterr()
        # 18 items per judge; the flaky judge failed on 1: refused by default, count and reason last
        assert rc == 1
        assert captured.err.strip().splitlines()[-1] == (
            "error: judge local:flaky on msvd_qa: 1 of 18 judgements failed (5.6% > --max-failure-rate 0); "
            "most common reason: " + next(r for r in _rows(out, "local-flaky") if r["failed"])["error"]
        )
        assert "model crashed on this item" in captured.err.strip().splitlines()[-1]
        # 12 distinct (question, answer, prediction) among the 18 items: each asked once, the failure not retried
        assert len(good.calls) == 12 and len(bad.calls) == 12
        rc = main(
            [
                "swap",
                str(source),
                "--judges",
                judges,
                "--out",
                str(out),
                "--max-failure-rate",
                "0.06",
                "--reference",
                "exact",
            ]
        )
        assert rc == 0 and len(good.calls) == 12 and len(bad.calls) == 13  # cached; only the failure asked again
    report = json.loads((out / "swap_report.json").read_text())
    assert report["judges"] == ["exact-match", "local:good", "local:flaky"] and report["reference"] == "exact-match"
    assert report["failures"]["local:flaky"] == {"failed": 1, "total": 18}
    pooled = {p["judge"]: p for p in report["per_judge"] if p["run"] == "all runs"}
    assert pooled["exact-match"]["accuracy"]["estimate"] == pytest.approx(700 / 18)
    assert pooled["local:good"]["accuracy"]["estimate"] == pytest.approx(1000 / 18)
    assert pooled["local:flaky"]["accuracy"]["estimate"] == pytest.approx(1000 / 17)
    assert pooled["local:flaky"]["accuracy"]["n"] == 17 and pooled["local:flaky"]["failures"] == 1
    # the three runs answered questions about the same 3 videos: the pooled interval resamples those
    assert (
        pooled["exact-match"]["accuracy"]["clusters"] == 3
        and "over videos" in pooled["exact-match"]["accuracy"]["method"]
    )
    shift = next(s for s in report["shifts"] if s["judge"] == "local:good")
    assert shift["accuracy_shift"]["estimate"] == pytest.approx(300 / 18) and shift["n"] == 18
    pair = next(p for p in report["pairs"] if (p["a"], p["b"]) == ("exact-match", "local:good"))
    assert pair["agreement"] == pytest.approx(1500 / 18) and pair["kappa_ci"]["low"] <= pair["kappa"]
    ranking = report["rankings"][0]
    assert ranking["runs"] == ["org__model/20250101_100000", "org__model/20250102_100000", "org__model/20250103_100000"]
    assert ranking["same_order"] and all(t["tau"] == pytest.approx(1.0) for t in ranking["tau"])  # 3 runs: defined
    disputed = report["disagreements"]
    assert sorted(d["prediction"] for d in disputed) == ["cupboard", "hotdog", "hotdog"]
    assert disputed[0]["question"] == "what animal is shown?" and disputed[0]["answer"] == "dog"
    markdown = (out / "swap_report.md").read_text()
    assert "## Agreement between judges" in markdown and "Kendall" not in markdown.split("## Ranking")[0]
    # 16.7 to 50.0 around 38.9 is lopsided: shown as a range, not ±
    assert f"{700 / 18:.1f} (16.7 to 50.0, n=18)" in markdown and "'cupboard'" in markdown
    page = (out / "swap_report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    assert {p.name for p in (out / "plots").iterdir()} >= {"swap_accuracy.png", "swap_kappa_msvd_qa.png"}


def _rows(out: Path, slug: str) -> list[dict]:
    files = sorted((out / "rejudge" / slug).rglob("*_items.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_fewer_than_three_runs_say_na_and_a_dead_judge_stops_early(tmp_path, capsys):
    source = runs_folder(tmp_path) / "org__model" / "20250101_100000_samples_msvd_qa.jsonl"
    assert main(["swap", str(source), "--judges", "exact,exact", "--out", str(tmp_path / "r")]) == 2
    assert "twice" in capsys.readouterr().err
    with FakeChatServer() as server:
        assert (
            main(
                [
                    "swap",
                    str(source),
                    "--judges",
                    f"exact,local:x@{server.url}",
                    "--out",
                    str(tmp_path / "r"),
                    "--no-plots",
                ]
            )
            == 0
        )
    report = json.loads((tmp_path / "r" / "swap_report.json").read_text())
    assert report["rankings"][0]["runs"] == [] and "one run" in (tmp_path / "r" / "swap_report.md").read_text()
    # a closed port: the preflight refuses the judge before anything is judged
    assert (
        main(["swap", str(source), "--judges", "exact,local:x@http://127.0.0.1:9/v1", "--out", str(tmp_path / "dead")])
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: a judge failed its preflight")
    assert not (tmp_path / "dead" / "swap_report.json").exists()


def test_a_judge_failing_every_item_fails_the_swap_whatever_the_other_judge_did(tmp_path, capsys):
    """Pooled, 18 of 36 failed is within 0.5; per judge, 18 of 18 is not - and the line names the judge."""
    source = runs_folder(tmp_path)

    def broken(call: Call) -> Response:  # answers the preflight's probe, fails every real item
        return word_judge(call) if call.field("Predicted Answer") == PROBE.prediction else error(500, "broken")

    with FakeChatServer(broken) as server:
        judges = f"exact,local:broken@{server.url}"
        rc = main(["swap", str(source), "--judges", judges, "--out", str(tmp_path / "r"), "--max-failure-rate", "0.5"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("error: judge local:broken on msvd_qa: 18 of 18 judgements failed (100.0%")


def test_an_at_sign_in_a_model_name_is_an_error_unless_escaped():
    with pytest.raises(ValueError, match=r"ambiguous '@'.*%40.*--base-url"):
        swap.parse_spec("local:/models/smol@v2.gguf@http://h:1/v1")
    with pytest.raises(ValueError, match="ambiguous '@'"):
        swap.parse_spec("local:/models/smol@v2.gguf")
    spec = swap.parse_spec("local:/models/smol%40v2.gguf@http://u:p@h:1/v1")
    assert (spec.model, spec.base_url) == ("/models/smol@v2.gguf", "http://u:p@h:1/v1")


def test_confidence_summarises_the_recorded_p_yes_by_hand():
    """Mean P(yes), mean probability of the verdict given, share within 0.1 of a coin flip; rows without P(yes)
    (a server's verdicts) are left out, and none at all gives None."""
    from llamavid_eval.judges.swap import confidence

    rows = [{"metadata": {"p_yes": p}} for p in (0.55, 0.9, 0.2)] + [{"metadata": {}}, {}]
    got = confidence(rows)
    assert got["n"] == 3
    assert got["mean_p_yes"] == pytest.approx((0.55 + 0.9 + 0.2) / 3)
    assert got["mean_p_verdict"] == pytest.approx((0.55 + 0.9 + 0.8) / 3)
    assert got["near_coin_share"] == pytest.approx(1 / 3)
    assert confidence([{"metadata": {}}, {}]) is None


def test_the_reference_is_found_before_anything_is_judged(tmp_path, capsys):
    """``--reference local:m`` is the plain judge, not its prompt-file variant listed after it; a name that is
    not among the judges stops the swap before any judge is asked."""
    prompt = tmp_path / "p.yaml"
    prompt.write_text(
        "system: Judge answers.\nuser: 'Q: {question} A: {answer} P: {prediction}'\nreask: Reply with the dict only.\n"
    )
    specs = swap.parse_judges(f"local:m@http://h:1/v1#prompt={prompt},local:m@http://h:1/v1,exact")
    settings = swap.judge_settings(specs)
    assert [swap.reference_index(specs, settings, ref) for ref in ("local:m", "exact-match", "exact", None)] == [
        1,
        2,
        2,
        0,
    ]
    assert swap.reference_index(specs, settings, specs[0].text) == 0
    with pytest.raises(ValueError, match=r"names local:m twice \(local:m@http://h:1/v1 and local:m@http://h:2/v1\)"):
        swap.judge_settings(swap.parse_judges("local:m@http://h:1/v1,local:m@http://h:2/v1"))
    source = runs_folder(tmp_path)
    with FakeChatServer() as server:
        judges = f"exact,local:good@{server.url}"
        rc = main(["swap", str(source), "--judges", judges, "--out", str(tmp_path / "r"), "--reference", "bogus"])
        assert rc == 2 and server.calls == []
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: --reference 'bogus' is not among the judges") and "exact-match" in last
