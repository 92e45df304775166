"""``print-config``, ``validate`` and ``list``: recipe and registry introspection (no model is built)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "list":
        parser.add_argument("kind", nargs="?", help="component kind (default: all kinds)")
        return
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")


def run(args: argparse.Namespace) -> int:
    if args.command == "list":
        return _list(args.kind)
    from vidtempo.config.load import load_recipe, to_yaml

    cfg = load_recipe(args.recipe, args.overrides)
    if args.command == "print-config":
        print(to_yaml(cfg), end="")
        return 0
    from vidtempo.training.run import prepare

    prepare(cfg)
    print(f"{args.recipe}: ok")
    return 0


def _list(kind: str | None) -> int:
    from vidtempo.registry import get_registry, kinds

    for k in [kind] if kind else kinds():
        registry = get_registry(k)
        print(f"{k}:")
        for alias, entry in registry.names().items():
            print(f"  {alias:<22} {entry.doc}")
    return 0
