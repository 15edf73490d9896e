"""The README's two commands stay true: CI runs the README's test command verbatim, and the main
command's module exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_the_readme_test_command_verbatim():
    main, tests = readme_commands()
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines
    assert "pytest" in tests and "pytest" not in main


def test_main_command_runs_an_existing_subcommand():
    from llamavid_eval.cli import COMMANDS

    main, _ = readme_commands()
    command = re.search(r"&& llamavid (\w+)", main).group(1)
    assert command in COMMANDS, command
    assert importlib.util.find_spec(COMMANDS[command][0]) is not None
