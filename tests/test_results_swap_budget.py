"""The judge swap report applies the judge failure budget and shows every judged metric both ways (VALID, ALL)."""

from __future__ import annotations

import pytest

from llamavid_eval.judges import swap
from llamavid_eval.results import swap_report


def _rows(verdicts: list[bool | None], run: str = "r1") -> list[dict]:
    return [
        {"task": "msvd_qa", "run": run, "doc_id": i, "video": f"v{i // 2}", "question": f"q{i}", "answer": "a",
         "prediction": "p", "verdict": v, "score": None if v is None else 5 * v, "failed": v is None,
         "error": "prose" if v is None else None}
        for i, v in enumerate(verdicts)
    ]  # fmt: skip


def test_a_judge_over_the_budget_gets_no_numbers_and_the_other_both_ways():
    rows = {"good": _rows([True, False, True, True]), "flaky": _rows([True, None, None, True])}
    report = swap.analyse(rows, max_failure_rate=0.05)
    pooled = {p["judge"]: p for p in report["per_judge"]}
    assert pooled["good"]["accuracy"]["estimate"] == pytest.approx(75.0) and pooled["good"]["withheld"] is None
    assert pooled["good"]["accuracy_all"]["estimate"] == pytest.approx(75.0)
    assert pooled["flaky"]["accuracy"] is None and pooled["flaky"]["accuracy_all"] is None
    assert "[msvd_qa, judge flaky] judge failed on 2 of 4 items" in pooled["flaky"]["withheld"]
    markdown = swap_report.to_markdown(report)
    assert "accuracy (%) ALL" in markdown and "| flaky | 4 | 2 | judge failed: not a score |" in markdown
    lenient = {p["judge"]: p for p in swap.analyse(rows, max_failure_rate=0.5)["per_judge"]}
    assert lenient["flaky"]["accuracy"]["estimate"] == 100.0 and lenient["flaky"]["accuracy_all"]["estimate"] == 50.0
