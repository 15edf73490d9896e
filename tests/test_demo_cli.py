"""`llamavid demo` fails with a non-zero status and the reason on the last line of its output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llamavid_eval import demo


def test_a_foreign_data_folder_stops_the_demo_with_the_reason_last(tmp_path, capsys):
    foreign = tmp_path / "data" / "llamavid_demo"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("someone's data")
    assert demo.main(["--workdir", str(tmp_path), "--train", "1", "--test", "1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: llamavid demo: ") and str(foreign) in last and "not empty" in last
    assert (foreign / "mine.txt").read_text() == "someone's data"


def test_an_evaluation_that_lmms_eval_logs_as_failed_is_a_failure(tmp_path, monkeypatch, capsys):
    """lmms-eval exits 0 after 'Error during evaluation': the demo must not go on as if it ran."""

    def exits_zero_but_failed(command, **_kwargs):
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="Error during evaluation: no checkpoint\n")

    monkeypatch.setattr(demo.subprocess, "run", exits_zero_but_failed)
    with pytest.raises(demo.DemoError, match="lmms-eval failed for zero-shot \\(exit status 0\\)"):
        demo.evaluate("zero-shot", Path("ckpt"), Path("bert"), 1.0, tmp_path, {}, None)
    assert "Error during evaluation: no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--train", "--test", "--epochs"])
def test_zero_videos_or_epochs_is_a_usage_error(option, capsys):
    with pytest.raises(SystemExit) as stopped:
        demo.main([option, "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"argument {option}: must be at least 1, got 0")
