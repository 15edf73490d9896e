"""``llamavid train --config <recipe.yaml> [--override key=value ...]`` and ``... merge``.

Multi-GPU / DeepSpeed / FSDP: ``accelerate launch [--config_file ...] -m llamavid_eval.training train --config ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llamavid_eval.core.dtypes import ALIASES
from llamavid_eval.core.exits import run_command
from llamavid_eval.training.config import ConfigError, TrainConfig, load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llamavid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="instruction-tune LLaMA-VID (full, LoRA or stage 1)")
    train.add_argument("--config", help="YAML recipe, e.g. training/recipes/ucf_crime_fps1.yaml")
    train.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one config key (YAML value syntax: 1e-4, null, [a, b]); repeatable",
    )
    merge = commands.add_parser("merge", help="base checkpoint + LoRA adapter -> full checkpoint (released layout)")
    merge.add_argument("--base", required=True, help="the checkpoint the adapter was trained on")
    merge.add_argument("--lora", required=True, help="adapter folder written by `train` (method=lora)")
    merge.add_argument("--out", required=True, help="output folder")
    merge.add_argument("--vision-tower", help="LAVIS eva_vit_g.pth (default: the base config's mm_vision_tower)")
    merge.add_argument("--qformer-tokenizer", help="bert-base-uncased folder (default: bert-base-uncased)")
    merge.add_argument("--dtype", default="bfloat16", choices=list(ALIASES))
    args = parser.parse_args(argv)
    if args.command == "train":
        try:
            config = load_config(args.config, args.override)
        except ConfigError as error:
            parser.error(str(error))
        return run_command(lambda: _train(config), expected_errors(), "llamavid train")
    return run_command(lambda: _merge(args), expected_errors(), "llamavid merge")


def expected_errors() -> tuple[type[Exception], ...]:
    """Failures whose message says what to fix (missing or malformed file, bad record, missing extra):
    one ``error:`` line; anything else also prints its traceback. Imported here, after parsing, so
    that ``--help`` does not wait for torch."""
    from llamavid_eval.model.video import VideoDecodeError
    from llamavid_eval.model.weights import WeightFileError
    from llamavid_eval.training.data import DataError

    return ConfigError, DataError, WeightFileError, VideoDecodeError, FileNotFoundError, ImportError


def in_our_terms(error: FileNotFoundError, names: str) -> FileNotFoundError:
    """The loader's message names lmms-eval's model arguments; this command calls them ``names``."""
    return FileNotFoundError(f"{error} Here the model arguments are {names}.")


def _train(config: TrainConfig) -> None:
    from llamavid_eval.training.recipe import train

    try:
        print(train(config))
    except FileNotFoundError as err:
        raise in_our_terms(err, "config keys: pretrained= is base, vision_tower= vision_tower, qformer_tokenizer= "
                                "qformer_tokenizer") from None  # fmt: skip


def _merge(args: argparse.Namespace) -> None:
    from llamavid_eval.training.checkpointing import merge_lora

    try:
        print(merge_lora(args.base, args.lora, args.out, vision_tower=args.vision_tower,
                         qformer_tokenizer=args.qformer_tokenizer, dtype=args.dtype))  # fmt: skip
    except FileNotFoundError as err:
        raise in_our_terms(err, "options: pretrained= is --base, vision_tower= --vision-tower, qformer_tokenizer= "
                                "--qformer-tokenizer") from None  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
