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
    ranks = launch(cfg, rank_command(args, "train"))  # a CPU run of N processes starts them now, before the imports
    return train_ranks(cfg, ranks, args.allow_changed_recipe)


def train_ranks(cfg: Any, ranks: Any, allow_changed_recipe: bool) -> int:
    """Train ``cfg`` in this process (rank 0 of a run ``launch`` started, or the only one) and wait for the other
    ranks; the exit code: 0, 130 after Ctrl-C (the checkpoint is saved), or another rank's failing code."""
    from vidtempo.training.run import RunInterrupted, train

    try:
        final = train(cfg, allow_changed_recipe=allow_changed_recipe)
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


def launch(cfg: Any, command: list[str]) -> Any:
    """Start ranks 1..N-1 of a one-node CPU run of N processes (``vidtempo.training.launch``), each running
    ``command``; None when this run is not one (a single process, a GPU run, or launched by something else)."""
    from omegaconf import OmegaConf

    from vidtempo.config.load import resolve_recipe
    from vidtempo.training.launch import launch_local_ranks, launch_size

    size = launch_size(OmegaConf.to_container(resolve_recipe(cfg), resolve=True))  # type: ignore[arg-type]
    return launch_local_ranks(size, command) if size else None


def rank_command(args: argparse.Namespace, command: str, flags: tuple[str, ...] = ()) -> list[str]:
    """The command line of a started rank: this ``vidtempo <command>`` with its global flags (``-v``,
    ``--debug``), the recipe, its overrides and the command's own ``flags``."""
    common = [flag for flag, on in (("-v", getattr(args, "verbose", False)), ("--debug", getattr(args, "debug", False))) if on]
    changed = ["--allow-changed-recipe"] if args.allow_changed_recipe else []
    return [sys.executable, "-m", "vidtempo.cli.main", *common, command, str(args.recipe), *args.overrides, *flags,
            *changed]  # fmt: skip
