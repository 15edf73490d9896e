"""The one reader of lmms-eval outputs (``core.outputs``) and the per-item values behind a metric (``core.scores.metric_items``)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from llamavid_eval.core.outputs import find_samples, iter_samples, samples_beside, stamp_to_utc
from llamavid_eval.core.scores import metric_items


def test_lmms_eval_stamps_are_utc_plus_8_by_default():
    assert stamp_to_utc("20250101_100000") == datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc)
    assert stamp_to_utc("20250701_100000", "America/New_York") == datetime(2025, 7, 1, 14, 0, tzinfo=timezone.utc)
    assert stamp_to_utc("2024-05-01T10-00-00.123") == datetime(2024, 5, 1, 2, 0, 0, 123000, tzinfo=timezone.utc)
    assert stamp_to_utc("not a stamp") is None
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        stamp_to_utc("20250101_100000", "Mars/Base")


def test_samples_files_new_and_old_names(tmp_path: Path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in (
        "20250101_100000_samples_msvd_qa.jsonl",
        "samples_ucf_crime_2024-05-01T10-00-00.123.jsonl",
        "20250101_100000_rejudge_exact-match_items.jsonl",
        "20250102_100000_samples_msvd_qa.jsonl",
    ):
        (folder / name).write_text("{}\n")
    found = [(f.task, f.date_id) for f in find_samples(tmp_path)]
    assert found == [
        ("msvd_qa", "20250101_100000"),
        ("msvd_qa", "20250102_100000"),
        ("ucf_crime", "2024-05-01T10-00-00.123"),
    ]
    assert samples_beside(folder / "20250101_100000_results.json") == {
        "msvd_qa": folder / "20250101_100000_samples_msvd_qa.jsonl"
    }


def test_a_half_written_line_is_an_error_naming_the_line(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"doc_id": 0}\n{"doc_id": 1, "accur\n')
    with pytest.raises(ValueError, match=r"s\.jsonl:2: not JSON"):
        list(iter_samples(path))
    path.write_bytes('{"doc_id": 0, "q": "caf\u00e9"}\n'.encode() + b'{"doc_id": 1, "q": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"s\.jsonl:2: not UTF-8"):
        list(iter_samples(path))


UCF = [("Arson", "Arson"), ("Arson", "Normal"), ("Normal", "Normal"), ("Abuse", "UNMAPPED")]


def ucf_samples() -> list[dict]:
    return [
        {
            "doc_id": i,
            "accuracy": {"id": i, "gold": g, "pred": p, "prediction": p},
            "macro_accuracy": {"gold": g, "pred": p},
            "binary_accuracy": {"gold": g, "pred": p},
            "acc_arson": {"gold": g, "pred": p},
        }
        for i, (g, p) in enumerate(UCF)
    ]


def test_item_values_derived_from_record_shapes():
    samples = ucf_samples()
    accuracy = metric_items(samples, "ucf_crime", "accuracy")
    assert [it.value for it in accuracy.items] == [100.0, 0.0, 100.0, 0.0] and accuracy.binary
    assert not accuracy.clustered and accuracy.items[0].cluster == "doc:0"
    arson = metric_items(samples, "ucf_crime", "acc_arson")
    assert [it.key for it in arson.items] == ["0", "1"] and arson.mean() == 50.0  # only the Arson videos
    binary = metric_items(samples, "ucf_crime", "binary_accuracy")
    assert [it.value for it in binary.items] == [100.0, 0.0, 100.0, 0.0]  # UNMAPPED is on neither side
    assert metric_items(samples, "ucf_crime", "macro_accuracy") is None  # not a mean of items
    plain = [{"doc_id": i, "exact_match": v} for i, v in enumerate([1.0, 0.0, 1.0, 1.0])]
    em = metric_items(plain, "gqa", "exact_match")
    assert [it.value for it in em.items] == [1.0, 0.0, 1.0, 1.0] and em.mean() == 0.75


def test_task_written_item_values_are_taken_at_their_word():
    """Our tasks write item_value (and video) per metric copy; no value = not an item of that metric."""
    samples = [
        {"doc_id": 0, "accuracy": {"video": "a.mp4", "item_value": 100.0, "judgement": {"verdict": True, "score": 5}}},
        {
            "doc_id": 1,
            "accuracy": {
                "video": "a.mp4",
                "prediction": "p",
                "judgement": {"verdict": None, "score": None, "failed": True},
            },
        },
        {"doc_id": 2, "accuracy": {"video": "b.mp4", "item_value": 0.0}},
        {"doc_id": 3, "acc_arson": {"video": "c.mp4", "gold": "Normal", "pred": "Normal"}},
    ]
    items = metric_items(samples, "msvd_qa", "accuracy")
    assert [(it.key, it.value) for it in items.items] == [("0", 100.0), ("1", None), ("2", 0.0)]
    assert items.failures == 1 and items.clustered and [it.cluster for it in items.valid] == ["a.mp4", "b.mp4"]


def test_judged_items_are_the_recorded_verdicts_both_ways():
    """A judged record is logged once (under accuracy); every judged metric reads its verdict, ALL counts a failure as 0."""
    judged = [
        {"doc_id": 0, "accuracy": {"video": "a", "prediction": "p", "judgement": {"verdict": True, "score": 5}}},
        {"doc_id": 1, "accuracy": {"video": "a", "prediction": "p", "judgement": {"verdict": None, "score": None,
                                                                                   "failed": True, "error": "prose"}}},
        {"doc_id": 2, "accuracy": {"video": "b", "prediction": "p", "judgement": {"verdict": False, "score": 2}},
         "mean_score": None},
    ]  # fmt: skip
    assert [it.value for it in metric_items(judged, "msvd_qa", "accuracy").items] == [100.0, None, 0.0]
    assert [it.value for it in metric_items(judged, "msvd_qa", "mean_score").items] == [5.0, None, 2.0]
    assert [it.value for it in metric_items(judged, "msvd_qa", "accuracy_all").items] == [100.0, 0.0, 0.0]
    assert metric_items(judged, "msvd_qa", "judged_items") is None


def test_a_subset_metric_skips_other_classes_without_calling_them_judge_failures():
    """acc_arson covers Arson videos only: the others are not failures, and a Normal video predicted
    as Arson is not an Arson item (the prediction never decides membership)."""
    from llamavid_eval.core.scores import metric_items

    marked = [
        {"doc_id": 0, "acc_arson": {"gold": "Arson", "pred": "Arson", "item_value": 100.0, "video": "v0"}},
        {"doc_id": 1, "acc_arson": {"gold": "Normal", "pred": "Arson", "video": "v1"}},
        {"doc_id": 2, "acc_arson": {"gold": "Abuse", "pred": "Abuse", "video": "v2"}},
    ]
    items = metric_items(marked, "ucf_crime", "acc_arson")
    assert (len(items.items), items.failures, items.mean()) == (1, 0, 100.0)
    unmarked = [{k: ({kk: vv for kk, vv in v.items() if kk != "item_value"} if isinstance(v, dict) else v)
                 for k, v in s.items()} for s in marked]  # fmt: skip
    items = metric_items(unmarked, "ucf_crime", "acc_arson")
    assert [it.key for it in items.items] == ["0"] and items.failures == 0
