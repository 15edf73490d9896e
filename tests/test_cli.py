"""The ``llamavid`` command line, and the built wheel in a clean environment (issue 13's install check)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from llamavid_eval import cli

REPO = Path(__file__).resolve().parents[1]
# command -> options its --help must mention
HELP_MENTIONS = {
    "demo": ["--workdir", "--epochs"],
    "prepare": ["msvd_qa", "ucf_crime", "animal_kingdom"],
    "judge": ["rejudge", "agree", "swap"],
    "results": ["table", "compare"],
    "train": ["--config", "--override"],
    "merge": ["--base", "--lora", "--out", "--dtype"],
}


def test_every_command_is_covered_here():
    assert set(HELP_MENTIONS) == set(cli.COMMANDS)


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(HELP_MENTIONS))
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: llamavid {command}") or out.startswith("usage: llamavid ")
    assert all(option in out for option in HELP_MENTIONS[command]), out


def test_unknown_command_exits_2_naming_the_choices(capsys):
    assert cli.main(["evaluate"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown command 'evaluate'" in last and all(name in last for name in cli.COMMANDS)
    assert cli.main([]) == 2


def test_console_script_is_installed():
    done = subprocess.run([str(Path(sys.executable).parent / "llamavid"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "prepare" in done.stdout


# Run inside the clean environment: cwd holds a decoy ``tasks`` package, PYTHONPATH the installed wheel.
CLEAN_CHECK = textwrap.dedent(
    """
    import sys
    from importlib.metadata import entry_points
    from pathlib import Path

    site = Path(sys.argv[1]).resolve()
    import tasks
    assert getattr(tasks, "DECOY", False), f"import tasks found {tasks.__file__}, not the decoy"
    import llamavid_eval.tasks
    assert site in Path(llamavid_eval.tasks.TASKS_DIR).resolve().parents, llamavid_eval.tasks.TASKS_DIR
    (point,) = [p for p in entry_points(group="lmms_eval.models") if p.name == "llamavid"]
    (manifest,) = point.load()()
    assert manifest.model_id == "llamavid", manifest
    from lmms_eval.tasks import TaskManager
    found = TaskManager().task_index["msvd_qa"]["yaml_path"]
    assert site in Path(found).resolve().parents, found
    print("clean install ok:", found)
    """
)


def shared_site_packages() -> Path:
    """The test venv's site-packages (torch, lmms-eval, ...), without running its ``.pth`` files, so the
    editable install of this repository is not importable from the clean environment."""
    return Path(sysconfig.get_paths()["purelib"])


@pytest.mark.slow
def test_wheel_installs_under_one_namespace_and_lmms_eval_finds_model_and_tasks(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in ("llamavid_eval", "llamavid_model", "tasks", "judges", "training", "results"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, cwd=source)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("llamavid_eval-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    generic = {"tasks", "judges", "training", "results", "llamavid_model"}
    assert not generic & {p.name for p in site.iterdir()}, sorted(p.name for p in site.iterdir())

    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    (clean_site,) = env_dir.glob("lib/python*/site-packages")
    (clean_site / "shared.pth").write_text(f"{shared_site_packages()}\n")
    work = tmp_path / "work"
    (work / "tasks").mkdir(parents=True)
    (work / "tasks" / "__init__.py").write_text("DECOY = True\n")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(site)}
    done = subprocess.run([str(env_dir / "bin" / "python"), "-c", CLEAN_CHECK, str(site)], cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean install ok" in done.stdout


def test_an_error_from_a_dataloader_worker_ends_in_its_own_message():
    """torch re-raises a worker's error with the worker's traceback in its message; one line of that
    would bury the reason behind "Caught ... in DataLoader worker process 1. Original Traceback ..."."""
    import torch
    from torch.utils.data import DataLoader

    from llamavid_eval.core.exits import one_line

    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> None:
            raise ValueError("cannot decode video /data/v.mp4: found zero frames")

    with pytest.raises(ValueError) as caught:
        next(iter(DataLoader(Broken(), num_workers=1, multiprocessing_context="fork")))
    assert one_line(caught.value) == "ValueError: cannot decode video /data/v.mp4: found zero frames"
    assert one_line(ValueError("a\nb")) == "a b"
