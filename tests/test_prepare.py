"""`llamavid prepare`: raw public layouts -> prepared splits, training JSON, reports, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_tasks_support import AK_TEST, UCF_TEST, animal_kingdom_raw, ucf_raw, video_qa_raw

from llamavid_eval.tasks.prepare import main


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_qa_writes_relative_paths_and_reports_skips(tmp_path, capsys):
    qa, videos = video_qa_raw(tmp_path / "raw")
    root = tmp_path / "root"
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(root)]) == 0
    records = read_jsonl(root / "msvd_qa" / "test.jsonl")
    assert [r["id"] for r in records] == ["0", "1", "2", "3"]
    assert records[2] == {
        "id": "2",
        "video_id": "vid2",
        "question": "what color is the car?",
        "answer": "red",
        "video": "msvd_qa/videos/vid2.avi",
    }
    assert all((root / r["video"]).is_file() for r in records)
    report = json.loads((root / "msvd_qa" / "prepare_report_test.json").read_text())
    assert (report["written"], report["skipped"]) == (4, 1)
    assert report["skipped_rows"][0]["reason"] == "video not found" and report["skipped_rows"][0]["line"] == "record 4"
    assert not (root / "msvd_qa" / "test_instruct.json").exists()
    out = capsys.readouterr().out
    assert "wrote 4 records, skipped 1" in out and "skipped 1 x video not found" in out


def test_video_qa_train_split_writes_llava_conversations(tmp_path):
    qa, videos = video_qa_raw(tmp_path / "raw")
    root = tmp_path / "root"
    assert (
        main(["msrvtt_qa", "--qa", str(qa), "--videos", str(videos), "--split", "train", "--root", str(root), "--copy"])
        == 0
    )
    instruct = json.loads((root / "msrvtt_qa" / "train_instruct.json").read_text())
    assert instruct[0] == {
        "id": "0",
        "video": "msrvtt_qa/videos/vid1.mp4",
        "conversations": [
            {"from": "human", "value": "<image>\nwhat is the man doing?"},
            {"from": "gpt", "value": "dancing"},
        ],
    }
    assert not (root / "msrvtt_qa" / "videos" / "vid1.mp4").is_symlink()  # --copy


def test_default_root_is_the_env_var(tmp_path, monkeypatch):
    qa, videos = video_qa_raw(tmp_path / "raw")
    monkeypatch.setenv("LLAMAVID_DATA_ROOT", str(tmp_path / "env-root"))
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos)]) == 0
    assert (tmp_path / "env-root" / "msvd_qa" / "test.jsonl").is_file()


def test_missing_qa_file_names_it(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    assert (
        main(
            [
                "msvd_qa",
                "--qa",
                str(tmp_path / "nope.json"),
                "--videos",
                str(tmp_path / "videos"),
                "--root",
                str(tmp_path),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "QA file not found" in err and "nope.json" in err and "--qa" in err


def test_bad_qa_record_stops_or_is_skipped_and_listed(tmp_path, capsys):
    qa, videos = video_qa_raw(tmp_path / "raw")
    rows = json.loads(qa.read_text())
    del rows[1]["answer"]
    qa.write_text(json.dumps(rows))
    args = ["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(tmp_path / "root")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{qa}:record 1: record lacks answer" in err and "--skip-bad-rows" in err
    assert main([*args, "--skip-bad-rows"]) == 0
    report = json.loads((tmp_path / "root" / "msvd_qa" / "prepare_report_test.json").read_text())
    assert sorted(r["reason"] for r in report["skipped_rows"]) == ["record lacks answer", "video not found"]


def test_ucf_crime_from_split_lists(tmp_path):
    raw = ucf_raw(tmp_path / "raw")
    root = tmp_path / "root"
    lists = raw / "Anomaly_Detection_splits"
    args = [
        "ucf_crime",
        "--videos",
        str(raw / "Videos"),
        "--test-list",
        str(lists / "Anomaly_Test.txt"),
        "--train-list",
        str(lists / "Anomaly_Train.txt"),
    ]
    assert main([*args, "--root", str(root)]) == 0
    test = read_jsonl(root / "ucf_crime" / "test.jsonl")
    assert [(r["id"], r["label"], r["is_anomaly"]) for r in test][-3:] == [
        ("Stealing019_x264", "Stealing", True), ("Normal_Videos_003_x264", "Normal", False), ("Normal_Videos_006_x264", "Normal", False)
    ]  # fmt: skip
    assert test[3]["video"] == "ucf_crime/videos/RoadAccidents001_x264.mp4"
    instruct = json.loads((root / "ucf_crime" / "train_instruct.json").read_text())
    assert [c["conversations"][1]["value"] for c in instruct] == ["A. Abuse", "N. Normal"]
    assert instruct[0]["conversations"][0]["value"].startswith("<image>\nWhich category best describes")


def test_ucf_crime_test_list_from_temporal_annotations(tmp_path):
    raw = ucf_raw(tmp_path / "raw")
    temporal = raw / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    assert (
        main(
            [
                "ucf_crime",
                "--videos",
                str(raw / "Videos"),
                "--test-list",
                str(temporal),
                "--root",
                str(tmp_path / "root"),
            ]
        )
        == 0
    )
    test = read_jsonl(tmp_path / "root" / "ucf_crime" / "test.jsonl")
    assert [r["id"] + ".mp4" for r in test] == list(UCF_TEST)
    assert not (tmp_path / "root" / "ucf_crime" / "train.jsonl").exists()


def test_ucf_crime_bad_line_names_file_and_line(tmp_path, capsys):
    raw = ucf_raw(tmp_path / "raw")
    listing = raw / "Anomaly_Detection_splits" / "Anomaly_Test.txt"
    listing.write_text(listing.read_text() + "Unknown/Parade001_x264.mp4\n")
    assert (
        main(["ucf_crime", "--videos", str(raw / "Videos"), "--test-list", str(listing), "--root", str(tmp_path)]) == 1
    )
    assert f"{listing}:{len(UCF_TEST) + 1}: cannot read a UCF-Crime video name" in capsys.readouterr().err


def test_ucf_crime_missing_list(tmp_path, capsys):
    raw = ucf_raw(tmp_path / "raw")
    assert (
        main(
            [
                "ucf_crime",
                "--videos",
                str(raw / "Videos"),
                "--test-list",
                str(raw / "missing.txt"),
                "--root",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "UCF-Crime test list not found" in capsys.readouterr().err


def test_animal_kingdom_groups_sentences_by_code_in_file_order(tmp_path):
    annotations, videos = animal_kingdom_raw(tmp_path / "raw")
    root = tmp_path / "root"
    assert (
        main(["animal_kingdom", "--annotations", str(annotations), "--videos", str(videos), "--root", str(root)]) == 0
    )
    test = read_jsonl(root / "animal_kingdom" / "test.jsonl")
    assert [(r["id"], r["answer"]) for r in test] == [
        ("AAA1", "The bird is flying. The fish is swimming."),
        ("AAA2", "The lizard is keeping still."),
    ]
    assert test[0]["question"].startswith("Find the action each animal performs in the video.")
    instruct = json.loads((root / "animal_kingdom" / "train_instruct.json").read_text())
    assert [(c["id"], c["conversations"][1]["value"]) for c in instruct] == [
        ("BBB1", "The dog is running. The cat is sleeping.")
    ]
    report = json.loads((root / "animal_kingdom" / "prepare_report_train.json").read_text())
    assert (
        report["skipped_rows"][0]["reason"] == "video not found" and report["skipped_rows"][0]["row"]["code"] == "BBB2"
    )


def test_animal_kingdom_bad_segment(tmp_path, capsys):
    annotations, videos = animal_kingdom_raw(tmp_path / "raw")
    (annotations / "test.txt").write_text(AK_TEST + "AAA3 oops##The cat is sleeping.\n")
    assert (
        main(["animal_kingdom", "--annotations", str(annotations), "--videos", str(videos), "--root", str(tmp_path)])
        == 1
    )
    assert f"{annotations / 'test.txt'}:4: not a '<code> <start> <end>##<sentence>' segment" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "llamavid_eval.tasks.prepare", "animal_kingdom", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0 and "--annotations" in done.stdout


@pytest.mark.parametrize("dataset", ["msvd_qa", "ucf_crime", "animal_kingdom"])
def test_nothing_usable_is_an_error(tmp_path, capsys, dataset):
    (tmp_path / "videos").mkdir()
    (tmp_path / "qa.json").write_text(json.dumps([{"video_id": "x", "question": "q", "id": 0, "answer": "a"}]))
    (tmp_path / "list.txt").write_text("Abuse/Abuse001_x264.mp4\n")
    for split in ("train", "test"):
        (tmp_path / f"{split}.txt").write_text("X 0 1##The cat is sleeping.\n")
    extra = {
        "msvd_qa": ["--qa", str(tmp_path / "qa.json")],
        "ucf_crime": ["--test-list", str(tmp_path / "list.txt")],
        "animal_kingdom": ["--annotations", str(tmp_path)],
    }
    assert main([dataset, "--videos", str(tmp_path / "videos"), "--root", str(tmp_path / "root"), *extra[dataset]]) == 1
    assert "No usable rows" in capsys.readouterr().err


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_animal_kingdom_with_only_test_txt_prepares_test_and_names_the_missing_train(tmp_path, capsys):
    annotations, videos = animal_kingdom_raw(tmp_path / "raw")
    (annotations / "train.txt").unlink()
    root = tmp_path / "root"
    args = ["animal_kingdom", "--annotations", str(annotations), "--videos", str(videos), "--root", str(root)]
    assert main(args) == 0
    assert [r["id"] for r in read_jsonl(root / "animal_kingdom" / "test.jsonl")] == ["AAA1", "AAA2"]
    assert not (root / "animal_kingdom" / "train.jsonl").exists()
    out = capsys.readouterr().out
    assert (
        f"animal_kingdom/train: not prepared (Animal Kingdom train annotations not found: {annotations / 'train.txt'})"
        in out
    )
    (annotations / "test.txt").unlink()
    assert main(args) == 1
    reason = last_line(capsys.readouterr().err)
    assert reason.startswith("error: llamavid prepare:") and "train.txt" in reason and "test.txt" in reason


def test_ucf_crime_with_only_a_train_list(tmp_path, capsys):
    raw = ucf_raw(tmp_path / "raw")
    lists = raw / "Anomaly_Detection_splits"
    root = tmp_path / "root"
    args = ["ucf_crime", "--videos", str(raw / "Videos"), "--train-list", str(lists / "Anomaly_Train.txt")]
    assert main([*args, "--test-list", str(lists / "absent.txt"), "--root", str(root)]) == 0
    assert len(read_jsonl(root / "ucf_crime" / "train.jsonl")) == 2 and not (root / "ucf_crime" / "test.jsonl").exists()
    assert "ucf_crime/test: not prepared (UCF-Crime test list not found:" in capsys.readouterr().out
    assert main(["ucf_crime", "--videos", str(raw / "Videos"), "--root", str(root)]) == 1
    assert "no UCF-Crime test list given; no UCF-Crime train list given" in last_line(capsys.readouterr().err)


def test_prepare_command_fails_with_the_reason_last(tmp_path):
    """Through the console script: non-zero exit, ``error: ...`` as the last line, no traceback."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "llamavid"), "prepare", "msvd_qa", "--qa", str(tmp_path / "nope.json"),
         "--videos", str(tmp_path), "--root", str(tmp_path / "root")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        last_line(done.stderr).startswith("error: llamavid prepare: QA file not found") and "nope.json" in done.stderr
    )


def test_unexpected_prepare_errors_keep_the_traceback_and_end_with_the_reason(tmp_path, capsys, monkeypatch):
    import llamavid_eval.tasks.prepare as prepare

    def broken(*_args, **_kwargs):
        raise KeyError("index bug")

    monkeypatch.setattr(prepare.video_qa, "prepare", broken)
    qa, videos = video_qa_raw(tmp_path / "raw")
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and last_line(err) == "error: llamavid prepare: unexpected KeyError: 'index bug'"


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100], ids=["empty", "garbage"])
def test_an_unreadable_video_is_skipped_and_reported_at_prepare_time(tmp_path, capsys, content):
    """Found here, not when lmms-eval reaches the video mid-run (it would stop the run and exit 0)."""
    qa, videos = video_qa_raw(tmp_path / "raw")
    (videos / "vid2.avi").write_bytes(content)  # records 2 and 3 ask about vid2
    root = tmp_path / "root"
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(root)]) == 0
    assert [r["id"] for r in read_jsonl(root / "msvd_qa" / "test.jsonl")] == ["0", "1"]
    report = json.loads((root / "msvd_qa" / "prepare_report_test.json").read_text())
    unreadable = [row for row in report["skipped_rows"] if row["reason"].startswith("unreadable video:")]
    assert len(unreadable) == 2 and "vid2.avi" in unreadable[0]["reason"]
    assert "unreadable video" in capsys.readouterr().out


def test_duplicates_and_null_answers_are_bad_rows_not_counted_twice(tmp_path, capsys):
    qa, videos = video_qa_raw(tmp_path / "raw")
    rows = json.loads(qa.read_text())
    rows += [dict(rows[0]), {**rows[1], "id": 9, "answer": None}]  # id 0 again; a null answer
    qa.write_text(json.dumps(rows))
    root = tmp_path / "root"
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(root), "--skip-bad-rows"]) == 0
    assert [r["id"] for r in read_jsonl(root / "msvd_qa" / "test.jsonl")] == ["0", "1", "2", "3"]
    reasons = [
        row["reason"] for row in json.loads((root / "msvd_qa" / "prepare_report_test.json").read_text())["skipped_rows"]
    ]
    assert any("id 0 already used" in r for r in reasons) and "record has empty answer" in reasons
    ucf = ucf_raw(tmp_path / "ucf")
    listing = ucf / "Anomaly_Detection_splits" / "Anomaly_Test.txt"
    listing.write_text(listing.read_text() + listing.read_text().splitlines()[0] + "\n")
    assert main(["ucf_crime", "--videos", str(ucf / "Videos"), "--test-list", str(listing), "--root", str(root)]) == 1
    assert "is listed twice" in last_line(capsys.readouterr().err)


def test_animal_kingdom_code_with_a_skipped_segment_is_dropped_whole(tmp_path):
    """Keeping AAA1 with one of its two sentences would judge against half a reference."""
    annotations, videos = animal_kingdom_raw(tmp_path / "raw")
    lines = AK_TEST.splitlines()  # AAA1 has two segments, lines 1 and 3; line 1 loses its times
    (annotations / "test.txt").write_text("\n".join(["AAA1 oops##The bird is flying.", *lines[1:]]) + "\n")
    args = ["animal_kingdom", "--annotations", str(annotations), "--videos", str(videos), "--root", str(tmp_path)]
    assert main([*args, "--skip-bad-rows"]) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "animal_kingdom" / "test.jsonl")] == ["AAA2"]
    report = json.loads((tmp_path / "animal_kingdom" / "prepare_report_test.json").read_text())
    assert any(
        row["reason"].startswith("reference incomplete: its segment on line 1") for row in report["skipped_rows"]
    )


@pytest.mark.parametrize("copy", [[], ["--copy"]], ids=["symlink", "copy"])
def test_videos_already_in_the_prepared_folder_are_never_lost(tmp_path, copy):
    """--videos naming the folder prepare writes into (directly, through a symlink, or after an earlier
    prepare left links there): every raw video survives, and every record's video still plays."""
    qa, raw = video_qa_raw(tmp_path / "raw")
    root = tmp_path / "root"
    target = root / "msvd_qa" / "videos"
    target.parent.mkdir(parents=True)
    raw.rename(target)  # the raw videos sit where prepare places them
    (tmp_path / "through").symlink_to(target)
    originals = {p.name: p.read_bytes() for p in target.iterdir()}
    for videos in (target, tmp_path / "through", target):
        assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(root), *copy]) == 0
        assert {p.name: p.read_bytes() for p in target.iterdir()} == originals
        assert not any(p.is_symlink() for p in target.iterdir())
    elsewhere = tmp_path / "elsewhere"
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(target), "--root", str(elsewhere), *copy]) == 0
    assert (
        main(["msvd_qa", "--qa", str(qa), "--videos", str(elsewhere / "msvd_qa" / "videos"), "--root", str(elsewhere)])
        == 0
    )
    for record in read_jsonl(elsewhere / "msvd_qa" / "test.jsonl"):
        assert (elsewhere / record["video"]).read_bytes() == originals[Path(record["video"]).name]


def test_a_split_without_usable_rows_is_reported_and_the_others_still_written(tmp_path, capsys):
    annotations, videos = animal_kingdom_raw(tmp_path / "raw")
    (annotations / "train.txt").write_text("NOVIDEO 0 1##A cat sleeps.\n")
    root = tmp_path / "root"
    assert (
        main(["animal_kingdom", "--annotations", str(annotations), "--videos", str(videos), "--root", str(root)]) == 0
    )
    assert [r["id"] for r in read_jsonl(root / "animal_kingdom" / "test.jsonl")] == ["AAA1", "AAA2"]
    assert not (root / "animal_kingdom" / "train.jsonl").exists()
    train = json.loads((root / "animal_kingdom" / "prepare_report_train.json").read_text())
    assert (train["written"], train["skipped_rows"][0]["reason"]) == (0, "video not found")
    assert "animal_kingdom/train: not prepared (no usable rows: skipped 1)" in capsys.readouterr().out
    (annotations / "test.txt").write_text("NOVIDEO2 0 1##A dog runs.\n")
    assert (
        main(["animal_kingdom", "--annotations", str(annotations), "--videos", str(videos), "--root", str(root)]) == 1
    )
    out, err = capsys.readouterr()
    assert "animal_kingdom/test: not prepared (no usable rows: skipped 1)" in out
    assert last_line(err).startswith("error: llamavid prepare: No usable rows for animal_kingdom/train: 1 skipped")


def test_videos_are_found_by_any_extension_case_through_symlinked_folders_and_never_guessed(tmp_path):
    raw = ucf_raw(tmp_path / "raw")
    videos = raw / "Videos"
    abuse = videos / "Anomaly-Videos-Part-1" / "Abuse"
    (abuse / "Abuse028_x264.mp4").rename(abuse / "Abuse028_x264.MP4")  # listed as .mp4
    (videos / "Anomaly-Videos-Part-1").rename(tmp_path / "part1")
    (videos / "Anomaly-Videos-Part-1").symlink_to(tmp_path / "part1")  # a part linked in, not copied
    (videos / "Anomaly-Videos-Part-1" / "loop").symlink_to(videos)  # a cycle is walked once
    twin = videos / "copy" / "Arrest001_x264.mp4"
    twin.parent.mkdir()
    twin.write_bytes((tmp_path / "part1" / "Arrest" / "Arrest001_x264.mp4").read_bytes())
    root = tmp_path / "root"
    listing = raw / "Anomaly_Detection_splits" / "Anomaly_Test.txt"
    assert main(["ucf_crime", "--videos", str(videos), "--test-list", str(listing), "--root", str(root)]) == 0
    ids = [r["id"] for r in read_jsonl(root / "ucf_crime" / "test.jsonl")]
    assert "Abuse028_x264" in ids and "Shoplifting005_x264" in ids and "Arrest001_x264" not in ids
    report = json.loads((root / "ucf_crime" / "prepare_report_test.json").read_text())
    (skipped,) = report["skipped_rows"]
    assert skipped["reason"].startswith("ambiguous: 2 videos match") and str(twin) in skipped["reason"]


def test_annotation_text_is_utf8_with_or_without_a_bom_and_other_encodings_are_named(tmp_path, capsys):
    raw = ucf_raw(tmp_path / "raw")
    listing = raw / "Anomaly_Detection_splits" / "Anomaly_Test.txt"
    listing.write_bytes("\ufeff".encode() + listing.read_bytes())  # as Notepad saves it
    args = ["ucf_crime", "--videos", str(raw / "Videos"), "--test-list", str(listing), "--root", str(tmp_path / "root")]
    assert main(args) == 0
    assert read_jsonl(tmp_path / "root" / "ucf_crime" / "test.jsonl")[0]["id"] == "Abuse028_x264"
    qa, videos = video_qa_raw(tmp_path / "qa")
    qa.write_bytes(qa.read_text().replace("dancing", "danc\u00e9").encode("latin-1"))
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{qa}: not UTF-8 text" in last_line(err) and "iconv" in last_line(err)


@pytest.mark.parametrize("split", ["../x", "a/b", ""])
def test_a_split_is_a_name_not_a_path(tmp_path, capsys, split):
    qa, videos = video_qa_raw(tmp_path / "raw")
    with pytest.raises(SystemExit) as exit_:
        main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--split", split, "--root", str(tmp_path / "r")])
    assert exit_.value.code == 2 and "--split" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_null_id_is_a_bad_row(tmp_path):
    qa, videos = video_qa_raw(tmp_path / "raw")
    qa.write_text(json.dumps([{**row, "id": None} if row["id"] == 1 else row for row in json.loads(qa.read_text())]))
    root = tmp_path / "root"
    assert main(["msvd_qa", "--qa", str(qa), "--videos", str(videos), "--root", str(root), "--skip-bad-rows"]) == 0
    assert "None" not in [r["id"] for r in read_jsonl(root / "msvd_qa" / "test.jsonl")]
