"""Kendall's tau against a judge that gives every run the same accuracy is undefined: the swap report
says so in words, and neither its Markdown nor its JSON carries ``nan``."""

from __future__ import annotations

import json
import math

from llamavid_eval.results.swap_report import _ranking_lines, write

RUNS = ["a", "b", "c"]


def report(tau: float, p: float) -> dict:
    accuracy = {"exact": {"a": 40.0, "b": 50.0, "c": 60.0}, "hf:smol": {"a": 100.0, "b": 100.0, "c": 100.0}}
    ranking = {
        "task": "demo",
        "runs": RUNS,
        "order": {j: RUNS for j in accuracy},
        "accuracy": accuracy,
        "same_order": False,
        "tau": [{"a": "exact", "b": "hf:smol", "tau": tau, "p": p, "note": ""}],
        "unranked": [],
    }
    return {"rankings": [ranking]}


def test_tau_with_a_judge_that_ties_every_run_is_said_in_words():
    (line,) = [line for line in _ranking_lines(report(math.nan, math.nan)) if "vs" in line]
    assert "nan" not in line.lower()
    assert "undefined: hf:smol gives every run the same accuracy" in line


def test_a_defined_tau_is_printed_as_a_number():
    (line,) = [line for line in _ranking_lines(report(0.33, 0.6)) if "vs" in line]
    assert line.endswith("exact vs hf:smol: tau = 0.33 (p = 0.6)")


def test_the_json_report_has_null_where_tau_is_undefined(tmp_path, monkeypatch):
    import llamavid_eval.results.swap_report as swap_report

    monkeypatch.setattr(swap_report, "to_markdown", lambda r: "\n".join(_ranking_lines(r)))
    paths = write(report(math.nan, math.nan), tmp_path, plots=False)
    text = (tmp_path / "swap_report.json").read_text()
    assert "NaN" not in text and json.loads(text)["rankings"][0]["tau"][0]["tau"] is None
    assert "nan" not in (tmp_path / "swap_report.md").read_text().lower() and len(paths) == 3
