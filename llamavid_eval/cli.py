"""``llamavid``: the one command line, with a subcommand per job (``llamavid <command> --help``).

Each subcommand hands its arguments to the package that owns the job (imported only when used, so
``llamavid --help`` is instant); the ``python -m llamavid_eval.<package>`` forms run the same code.
Every command exits non-zero when it failed, with the reason in the last line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# command -> (module holding ``main(argv)``, arguments put in front, one-line help)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "demo": ("llamavid_eval.demo", (), "the whole pipeline on a synthetic dataset, on a CPU, in minutes"),
    "prepare": ("llamavid_eval.tasks.prepare", (), "raw public dataset layout -> the files our lmms-eval tasks read"),
    "judge": ("llamavid_eval.judges.__main__", (), "re-judge stored predictions, judge agreement, judge swap"),
    "results": ("llamavid_eval.results.__main__", (), "leaderboard tables and plots, paired comparison of two runs"),
    "train": ("llamavid_eval.training.__main__", ("train",), "instruction-tune LLaMA-VID (full, LoRA or stage 1)"),
    "merge": ("llamavid_eval.training.__main__", ("merge",), "base checkpoint + LoRA adapter -> full checkpoint"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return (
        "usage: llamavid <command> [options]   (llamavid <command> --help for its options)\n\n"
        f"commands:\n{rows}\n\n"
        "Evaluation itself runs in lmms-eval: lmms-eval --model llamavid --tasks msvd_qa ..."
    )


def command_main(name: str) -> Callable[[Sequence[str]], int | None]:
    module, prefix, _ = COMMANDS[name]
    main = importlib.import_module(module).main
    return lambda argv: main([*prefix, *argv])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(usage(), file=sys.stderr)
        print(f"llamavid: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(command_main(name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
