"""``vidtempo dpo RECIPE [--curriculum] [--pre-sft | --post-sft] [--dry-run] [overrides]``.

Expands the recipe's ``dpo`` + ``curriculum`` sections into stages (``vidtempo.training.curriculum``) and
trains them with ``vidtempo.training.run.train``: finished stages are skipped and the running one resumes from
its last checkpoint, so re-running the same command continues an interrupted curriculum where it stopped.
"""

from __future__ import annotations

import argparse


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--curriculum",
        action="store_true",
        default=None,
        help="one DPO stage per difficulty level (default: one stage over all levels)",
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument(
        "--pre-sft",
        dest="pre_sft",
        action="store_const",
        const=True,
        default=None,
        help="DPO stages before the SFT stage(s) (TEMPLE's pre-SFT alignment)",
    )
    order.add_argument(
        "--post-sft",
        dest="pre_sft",
        action="store_const",
        const=False,
        help="DPO stages after the SFT stage(s) (the baseline ordering)",
    )
    parser.add_argument("--dry-run", action="store_true", default=None, help="print the stage plan and exit")
    parser.add_argument("--allow-changed-recipe", action="store_true", default=None,
                        help="continue a run whose started stages were trained with other settings")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_flags(parser)
    parser.add_argument("recipe", help="recipe YAML file with 'dpo' (and 'curriculum') sections")
    # REMAINDER so that flags may also follow the recipe and the overrides (`RECIPE --curriculum a=b`);
    # run() picks them out again.
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value, +key=value or ~key")


def parse_flags(args: argparse.Namespace) -> argparse.Namespace:
    """Move this command's flags that came after the recipe out of ``args.overrides``."""
    flags = argparse.ArgumentParser(prog="vidtempo dpo", add_help=False)
    _add_flags(flags)
    late, rest = flags.parse_known_args(list(args.overrides or []))
    unknown = [a for a in rest if a.startswith("--")]
    if unknown:  # argparse-style: usage line + exit status 2
        flags.error(f"unknown option {unknown[0]}; options: --curriculum, --pre-sft, --post-sft, --dry-run, "
                    "--allow-changed-recipe")
    out = argparse.Namespace(**vars(args))
    out.overrides = rest
    for name in ("curriculum", "pre_sft", "dry_run", "allow_changed_recipe"):
        if getattr(late, name) is not None:
            if getattr(args, name) is not None and getattr(args, name) != getattr(late, name):
                flags.error(f"conflicting --{name.replace('_', '-')} options")
            setattr(out, name, getattr(late, name))
    out.curriculum, out.dry_run = bool(out.curriculum), bool(out.dry_run)
    out.allow_changed_recipe = bool(out.allow_changed_recipe)
    return out


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from vidtempo.cli.train import launch, rank_command, train_ranks
    from vidtempo.config.load import load_recipe, recipe_path, resolve_recipe
    from vidtempo.training.curriculum import describe_stages, expand_curriculum
    from vidtempo.training.launch import is_first_process

    args = parse_flags(args)
    cfg = load_recipe(args.recipe, args.overrides)
    plain = OmegaConf.to_container(resolve_recipe(cfg), resolve=True)
    assert isinstance(plain, dict)
    expanded = expand_curriculum(plain, curriculum=args.curriculum, pre_sft=args.pre_sft, recipe=recipe_path(cfg))
    if is_first_process():  # once, not by every rank of a multi-process run
        for line in describe_stages(expanded):
            print(line)
    if args.dry_run:
        return 0
    stages = OmegaConf.create(expanded)
    # a CPU run of N processes: ranks 1..N-1 run this same command (started here, before the training imports)
    ranks = launch(stages, rank_command(args, "dpo", _own_flags(args)))
    return train_ranks(stages, ranks, args.allow_changed_recipe)


def _own_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """``--curriculum`` / ``--pre-sft`` / ``--post-sft`` as given (``--allow-changed-recipe`` is common)."""
    order = {True: ("--pre-sft",), False: ("--post-sft",), None: ()}[args.pre_sft]
    return (*(("--curriculum",) if args.curriculum else ()), *order)
