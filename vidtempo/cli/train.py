"""``vidtempo train RECIPE [overrides]``."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")
    parser.add_argument("--allow-changed-recipe", action="store_true",
                        help="continue a run whose started stages were trained with other settings")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from vidtempo.config.load import load_recipe
    from vidtempo.training.run import RunInterrupted, train

    try:
        final = train(load_recipe(args.recipe, args.overrides), allow_changed_recipe=args.allow_changed_recipe)
    except RunInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return 130
    if int(os.environ.get("LOCAL_RANK", 0) or 0) == 0 and int(os.environ.get("NODE_RANK", 0) or 0) == 0:
        print(f"checkpoint: {final}")  # once, not by every rank of a multi-process run
    return 0
