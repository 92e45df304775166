"""``vidtempo train RECIPE [overrides]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")


def run(args: argparse.Namespace) -> int:
    from vidtempo.config.load import load_recipe
    from vidtempo.training.run import train

    final = train(load_recipe(args.recipe, args.overrides))
    print(f"checkpoint: {final}")
    return 0
