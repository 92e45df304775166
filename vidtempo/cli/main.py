"""``vidtempo`` entry point: ``vidtempo COMMAND ...``. Each command's module is imported only when it runs.

Example:
    >>> main(["list", "compressor"])  # doctest: +ELLIPSIS
    compressor...
    0
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys

from vidtempo import __version__

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vidtempo.cli.train", "train a recipe (all its stages); resumes from the last checkpoint"),
    "print-config": ("vidtempo.cli.config_cmds", "print the fully resolved recipe (after overrides)"),
    "validate": ("vidtempo.cli.config_cmds", "check a recipe without building anything"),
    "list": ("vidtempo.cli.config_cmds", "list registered component aliases"),
    "inspect": ("vidtempo.cli.inspect", "parameter counts and tokens per video, offline (meta device)"),
    "infer": ("vidtempo.cli.infer", "generate an answer for one video with a checkpoint"),
    "dpo": ("vidtempo.cli.dpo", "preference optimisation (DPO / TEMPO curriculum), pre- or post-SFT"),
    "prefgen": ("vidtempo.cli.prefgen", "self-generated TEMPO preference pairs (select, self-caption, perturb); resumable"),
    "eval": ("vidtempo.cli.eval", "evaluate a checkpoint on a benchmark (report.json + generations.jsonl, resumable)"),
    "cache": ("vidtempo.cli.cache", "precompute frozen-encoder features for a recipe's data (feature cache)"),
    "demo": ("vidtempo.cli.demo", "generate TempoSynth, train a tiny video LLM on CPU, evaluate with controls"),
    "data": ("vidtempo.cli.data", "data tools (synth: generate the TempoSynth benchmark)"),
}


class UserError(Exception):
    """An error to print without a traceback (bad recipe, missing file, ...)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidtempo", description="Train and evaluate video LLMs that reason about time.")
    parser.add_argument("--version", action="version", version=f"vidtempo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        # argument definitions are cheap; importing heavy code happens in run()
        add = importlib.import_module(module_name).add_arguments
        add(cmd, name) if len(inspect.signature(add).parameters) > 1 else add(cmd)
    return parser


def _setup_logging(verbose: bool) -> None:
    """vidtempo's own loggers print to stderr; other libraries (lightning) keep their own handlers."""
    logger = logging.getLogger("vidtempo")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; recipe overrides may also come after the flags (``eval R --checkpoint D key=value``).

    Example:
        >>> args = parse(build_parser(), ["eval", "r.yaml", "--checkpoint", "d", "--benchmark", "synth", "a.b=1"])
        >>> args.recipe, args.overrides
        ('r.yaml', ['a.b=1'])
    """
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all(_is_override(e) for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _is_override(text: str) -> bool:
    return not text.startswith("-") and ("=" in text or text.startswith("~"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if not args.command:
        parser.print_help()
        return 1
    _setup_logging(args.verbose)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except Exception as err:  # noqa: BLE001 - user-facing errors get one clean line
        from vidtempo.config.errors import RecipeError
        from vidtempo.registry import RegistryError

        if isinstance(err, (RecipeError, RegistryError, UserError, FileNotFoundError)):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
