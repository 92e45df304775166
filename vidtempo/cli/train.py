"""``vidtempo train RECIPE [overrides]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

RANK_GRACE_S = 30.0  # after rank 0 fails, how long the other ranks may take to exit on their own


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")
    parser.add_argument("--allow-changed-recipe", action="store_true",
                        help="continue a run whose started stages were trained with other settings")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from vidtempo.config.load import load_recipe

    cfg = load_recipe(args.recipe, args.overrides)
    ranks = launch(cfg, args)  # a CPU run of N processes starts them now, before the heavy imports
    from vidtempo.training.run import RunInterrupted, train

    try:
        final = train(cfg, allow_changed_recipe=args.allow_changed_recipe)
    except BaseException as err:
        if ranks is not None:  # the other ranks stop too (interrupted, or failing the same way): wait, then kill
            ranks.wait(timeout=RANK_GRACE_S)
        if not isinstance(err, RunInterrupted):
            raise
        print(str(err), file=sys.stderr)
        return 130
    code = ranks.wait() if ranks is not None else 0
    if code:
        print(f"error: another rank of this run exited with code {code} (its output above says why)",
              file=sys.stderr)  # fmt: skip
        return code
    from vidtempo.training.launch import is_first_process

    if is_first_process():
        print(f"checkpoint: {final}")  # once, not by every rank of a multi-process run
    return 0


def launch(cfg: Any, args: argparse.Namespace) -> Any:
    """Start ranks 1..N-1 of a one-node CPU run of N processes (``vidtempo.training.launch``); None otherwise."""
    from omegaconf import OmegaConf

    from vidtempo.config.load import resolve_recipe
    from vidtempo.training.launch import launch_local_ranks, launch_size

    size = launch_size(OmegaConf.to_container(resolve_recipe(cfg), resolve=True))  # type: ignore[arg-type]
    return launch_local_ranks(size, rank_command(args)) if size else None


def rank_command(args: argparse.Namespace) -> list[str]:
    """The command line of a started rank: this ``vidtempo train`` with its global flags (``-v``, ``--debug``)."""
    flags = [flag for flag, on in (("-v", getattr(args, "verbose", False)), ("--debug", getattr(args, "debug", False))) if on]
    return [sys.executable, "-m", "vidtempo.cli.main", *flags, "train", str(args.recipe), *args.overrides,
            *(["--allow-changed-recipe"] if args.allow_changed_recipe else [])]  # fmt: skip
