"""Agreement between two judges, on a hand-checked set, and ``llamavid judge agree``."""

from __future__ import annotations

import json
import math

import pytest

from llamavid_eval.judges.__main__ import main
from llamavid_eval.judges.agreement import compare, pearson, spearman

# Ten items both judges judged, plus failures and unmatched items.
#  item:      0  1  2  3  4  5  6  7  8  9
#  A verdict: y  y  y  y  y  n  n  n  n  n     A yes = 5
#  B verdict: y  y  y  y  n  y  y  n  n  n     B yes = 6
#  A score:   5  4  4  3  3  2  1  1  0  0     sum 23, mean 2.3
#  B score:   5  4  3  4  2  3  3  1  1  0     sum 26, mean 2.6
# Confusion (A rows, B columns): yes/yes 4, yes/no 1, no/yes 2, no/no 3.
# Kappa by hand: po = (4 + 3) / 10 = 0.7; pe = (5*6 + 5*4) / 100 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
# Pearson by hand: sum(ab) = 81, Sxy = 81 - 10*2.3*2.6 = 21.2; Sxx = 81 - 52.9 = 28.1; Syy = 90 - 67.6 = 22.4;
#   r = 21.2 / sqrt(28.1 * 22.4) = 21.2 / 25.0887 = 0.8450.
# Spearman by hand (average ranks for ties):
#   rank A = [10, 8.5, 8.5, 6.5, 6.5, 5, 3.5, 3.5, 1.5, 1.5], rank B = [10, 8.5, 6, 8.5, 4, 6, 6, 2.5, 2.5, 1]
#   both mean 5.5; Sxy = 67, Sxx = 80.5, Syy = 79.5; rho = 67 / sqrt(80.5 * 79.5) = 67 / 79.998 = 0.8375.
A_V = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
B_V = [1, 1, 1, 1, 0, 1, 1, 0, 0, 0]
A_S = [5, 4, 4, 3, 3, 2, 1, 1, 0, 0]
B_S = [5, 4, 3, 4, 2, 3, 3, 1, 1, 0]


def row(i, verdict, score, judge, failed=False):
    return {
        "task": "msvd_qa",
        "doc_id": i,
        "id": f"v{i}",
        "question": f"q{i}",
        "answer": f"a{i}",
        "prediction": f"p{i}",
        "verdict": None if failed else bool(verdict),
        "score": None if failed else score,
        "failed": failed,
        "error": "HTTP 500" if failed else None,
        "judge": judge,
    }


def judged_sets():
    a = [row(i, v, s, "openai:gpt-3.5-turbo") for i, (v, s) in enumerate(zip(A_V, A_S, strict=True))]
    b = [row(i, v, s, "local:llama3") for i, (v, s) in enumerate(zip(B_V, B_S, strict=True))]
    a += [
        row(10, None, None, "openai:gpt-3.5-turbo", failed=True),
        row(11, 0, 1, "openai:gpt-3.5-turbo"),
        row(12, 1, 5, "openai:gpt-3.5-turbo"),
    ]
    b += [
        row(10, 1, 4, "local:llama3"),
        row(11, None, None, "local:llama3", failed=True),
        row(13, 1, 5, "local:llama3"),
    ]
    return a, b


def test_hand_checked_numbers():
    a, b = judged_sets()
    r = compare(list(reversed(a)), b)  # order does not matter, ids do
    assert (r["n_a"], r["n_b"], r["matched"], r["only_in_a"], r["only_in_b"]) == (13, 13, 12, 1, 1)
    assert (r["failed_a"], r["failed_b"], r["failed_both"], r["n"]) == (1, 1, 0, 10)
    assert r["confusion"] == {"yes_yes": 4, "yes_no": 1, "no_yes": 2, "no_no": 3}
    assert r["accuracy_a"] == pytest.approx(50.0) and r["accuracy_b"] == pytest.approx(60.0)
    assert r["mean_score_a"] == pytest.approx(2.3) and r["mean_score_b"] == pytest.approx(2.6)
    assert r["agreement"] == pytest.approx(70.0)
    assert r["kappa"] == pytest.approx(0.4)
    assert r["pearson"] == pytest.approx(21.2 / math.sqrt(28.1 * 22.4)) and round(r["pearson"], 4) == 0.8450
    assert r["spearman"] == pytest.approx(67 / math.sqrt(80.5 * 79.5)) and round(r["spearman"], 4) == 0.8375
    assert (r["judge_a"], r["judge_b"]) == ("openai:gpt-3.5-turbo", "local:llama3")
    # disagreements: the largest score gap first (item 6: A no/1 vs B yes/3), then by id
    assert [d["id"] for d in r["disagreements"]] == ["v6", "v4", "v5"]
    assert r["disagreements"][0]["a"] == {"verdict": False, "score": 1, "failed": False, "error": None}
    assert sorted(f["id"] for f in r["failed_items"]) == ["v10", "v11"]
    # intervals: unclustered bootstrap over the 10 compared items; the paired shift B - A is +10 points
    ci = r["intervals"]
    assert ci["kappa"]["estimate"] == pytest.approx(0.4) and ci["kappa"]["n"] == 10
    assert ci["kappa"]["low"] < 0.4 < ci["kappa"]["high"]
    assert ci["accuracy_shift"]["estimate"] == pytest.approx(10.0) and "over items" in ci["accuracy_shift"]["method"]
    assert r["mcnemar_p"] == pytest.approx(1.0)  # 1 vs 2 discordant: exact two-sided p = 1


def test_degenerate_cases_are_none_not_nan():
    always_yes = compare([row(i, 1, 5, "x") for i in range(3)], [row(i, 1, 4, "y") for i in range(3)])
    assert always_yes["kappa"] is None and always_yes["agreement"] == 100.0  # chance agreement is 1
    opposite = compare([row(i, i % 2, 5, "x") for i in range(4)], [row(i, 1 - i % 2, 5, "y") for i in range(4)])
    assert opposite["kappa"] == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and pearson([1], [2]) is None
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    r = compare([], [])
    assert r["n"] == 0 and r["accuracy_a"] is None and r["kappa"] is None


def test_repeated_items_pair_in_order():
    a = [row(0, 1, 5, "x"), row(0, 0, 1, "x")]  # the same item judged twice in one file (e.g. two runs)
    b = [row(0, 1, 4, "y"), row(0, 0, 0, "y")]
    r = compare(a, b)
    assert r["matched"] == 2 and r["agreement"] == 100.0


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_markdown_and_json(tmp_path, capsys):
    a, b = judged_sets()
    fa = write(tmp_path / "20250101_000000_rejudge_openai-gpt-3.5-turbo_items.jsonl", a)
    fb = write(tmp_path / "20250101_000000_rejudge_local-llama3_items.jsonl", b)
    assert main(["agree", str(fa), str(fb)]) == 1  # each judge failed 1 of 12 matched items: refused by default
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-2:]  # the budget applies to each judge on its own
    assert last[0].startswith(f"error: judge A ({fa}): 1 of 12 judgements failed")
    assert last[1].startswith(f"error: judge B ({fb}): 1 of 12 judgements failed")
    assert main(["agree", str(fa), str(fb), "--max-failure-rate", "0.2"]) == 0
    md = capsys.readouterr().out
    assert "| Cohen's kappa | 0.400 |" in md and "| agreement on yes/no (%) | 70.00 |" in md
    assert "| **A yes** | 4 | 1 |" in md and "| **A no** | 2 | 3 |" in md
    assert "matched items: 12 (only in A: 1, only in B: 1)" in md
    assert "failed among matched: A 1, B 1 (both 0); compared: 10" in md
    assert "[msvd_qa #v6] Q: 'q6'" in md and "FAILED (HTTP 500)" in md
    assert main(["agree", str(fa), str(fb), "--json", "--max-failure-rate", "0.2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kappa"] == pytest.approx(0.4) and report["confusion"]["no_yes"] == 2
    # a folder holding two judges' files is ambiguous: the error names the files to pass instead
    assert main(["agree", str(tmp_path), str(fb)]) == 2
    err = capsys.readouterr().err
    assert "several judges" in err and fa.name in err
    (tmp_path / "other").mkdir()
    other = write(tmp_path / "other" / "20250101_000000_rejudge_local-llama3_items.jsonl",
                  [{**r, "task": "msrvtt_qa"} for r in b])  # fmt: skip
    assert main(["agree", str(fa), str(other)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: no item of {fa} (13 items) matches one of {other} (13 items; tasks: msvd_qa ")
    assert "against msrvtt_qa)" in last


def test_agree_on_two_rejudge_output_folders(tmp_path, capsys, judge_env):
    from llamavid_eval.judges.testing import FakeChatServer, reply

    samples = tmp_path / "run" / "m"
    samples.mkdir(parents=True)
    lines = [
        {"doc_id": i, "acc": {"id": i, "question": "q", "answer": ans, "prediction": pred}}
        for i, (ans, pred) in enumerate([("dog", "a dog"), ("cat", "a dog"), ("red", "crimson"), ("run", "walk")])
    ]
    (samples / "20250101_000000_samples_t.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert (
        main(["rejudge", str(tmp_path / "run"), "--judge", "exact", "--out", str(tmp_path / "A"), "--cache", "off"])
        == 0
    )

    def llm(call):  # accepts the synonym "crimson" as well as the literal match
        ok = (call.field("Predicted Answer"), call.field("Correct Answer")) in {("a dog", "dog"), ("crimson", "red")}
        return reply("{'pred': 'yes', 'score': 4}" if ok else "{'pred': 'no', 'score': 0}")

    with FakeChatServer(llm) as srv:
        assert (
            main(
                [
                    "rejudge",
                    str(tmp_path / "run"),
                    "--judge",
                    "local",
                    "--base-url",
                    srv.url,
                    "--out",
                    str(tmp_path / "B"),
                    "--cache",
                    "off",
                ]
            )
            == 0
        )
    capsys.readouterr()
    assert main(["agree", str(tmp_path / "A"), str(tmp_path / "B"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # exact: yes,no,no,no; llm: yes,no,yes,no -> 3/4 agree; confusion yy=1 yn=0 ny=1 nn=2
    # kappa: po=.75, pe=(1*2 + 3*2)/16=.5 -> .5
    assert (r["matched"], r["n"], r["agreement"]) == (4, 4, 75.0)
    assert r["confusion"] == {"yes_yes": 1, "yes_no": 0, "no_yes": 1, "no_no": 2}
    assert r["kappa"] == pytest.approx(0.5)
    assert r["judge_a"] == "exact-match" and r["judge_b"] == "local:meta-llama/Meta-Llama-3-8B-Instruct"


def test_agree_reads_lmms_eval_samples_with_judgements(tmp_path, capsys):
    """The one judge-comparison command also takes what a judged task logged (no rejudge needed)."""

    def samples(folder, judge, verdicts):
        lines = []
        for i, v in enumerate(verdicts):
            judgement = {
                "backend": "local",
                "model": judge,
                "verdict": v,
                "score": None if v is None else 4 * v,
                "failed": v is None,
                "error": "HTTP 500: down" if v is None else None,
            }
            record = {"id": i, "question": f"q{i}", "answer": "a", "prediction": "p", "judgement": judgement}
            lines.append({"doc_id": i, "accuracy": record, "mean_score": record})
        path = tmp_path / folder / "m" / "20250101_000000_samples_msvd_qa.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return path

    a = samples("a", "llama3", [True, True, False, False, None])
    b = samples("b", "qwen", [True, False, False, False, True])
    assert main(["agree", str(tmp_path / "a"), str(b), "--json", "--max-failure-rate", "0.2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["judge_a"], report["judge_b"], report["matched"], report["n"]) == (
        "local:llama3",
        "local:qwen",
        5,
        4,
    )
    assert report["agreement"] == 75.0 and report["failed_a"] == 1
    assert main(["agree", str(a), str(b)]) == 1
    assert "most common reason: HTTP 500: down" in capsys.readouterr().err.strip().splitlines()[-1]
