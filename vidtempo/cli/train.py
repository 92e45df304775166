"""``vidtempo train RECIPE [overrides]``."""

from __future__ import annotations

import argparse
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
    print(f"checkpoint: {final}")
    return 0
