"""``vidtempo`` entry point: ``vidtempo COMMAND ...``. Each command's module is imported only when it runs.

Errors: any exception a command raises ends the process with one line on stderr, ``error: <message>``, then
``(run with --debug for the traceback)``, and exit code 2. A user error (a recipe, data, checkpoint or
file problem) prints its message as is; anything else is prefixed with its type (``error: KeyError: ...``), a
sign of a bug worth reporting with ``vidtempo --debug ...``, which re-raises with the full traceback.
``KeyboardInterrupt`` is not an error here (the trainer handles Ctrl-C).

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
    "serve": ("vidtempo.cli.serve", "OpenAI-compatible HTTP server for a checkpoint (chat completions with video)"),
    "dpo": ("vidtempo.cli.dpo", "preference optimisation (DPO / TEMPO curriculum), pre- or post-SFT"),
    "prefgen": ("vidtempo.cli.prefgen", "self-generated TEMPO preference pairs (select, self-caption, perturb); resumable"),
    "eval": ("vidtempo.cli.eval", "evaluate a checkpoint on a benchmark (report.json + generations.jsonl, resumable)"),
    "cache": ("vidtempo.cli.cache", "precompute frozen-encoder features for a recipe's data (feature cache)"),
    "demo": ("vidtempo.cli.demo", "generate TempoSynth, train a tiny video LLM on CPU, evaluate with controls"),
    "data": ("vidtempo.cli.data", "data tools (synth: generate the TempoSynth benchmark)"),
    "export": ("vidtempo.cli.export", "a native Qwen2.5-VL checkpoint as a plain Hugging Face directory (LoRA merged)"),
}


LOADS_CHECKPOINTS = ("infer", "eval", "prefgen", "serve", "export")  # commands that build a model from a checkpoint's vidtempo.json


class UserError(Exception):
    """An error to print without a traceback (bad recipe, missing file, ...)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidtempo", description="Train and evaluate video LLMs that reason about time.")
    parser.add_argument("--version", action="version", version=f"vidtempo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        # argument definitions are cheap; importing heavy code happens in run()
        add = importlib.import_module(module_name).add_arguments
        add(cmd, name) if len(inspect.signature(add).parameters) > 1 else add(cmd)
        if name in LOADS_CHECKPOINTS:
            cmd.add_argument("--trust-checkpoint-code", action="store_true",
                             help="build the classes the checkpoint names even outside vidtempo and its registry "
                                  "(a checkpoint is data otherwise; docs/reliability.md)")  # fmt: skip
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
    try:
        module = importlib.import_module(args._module)
        if not getattr(args, "trust_checkpoint_code", False):
            return int(module.run(args) or 0)
        from vidtempo.models.checkpoint import trusting_checkpoint_code

        with trusting_checkpoint_code():
            return int(module.run(args) or 0)
    except Exception as err:  # noqa: BLE001 - every error gets one clean line unless --debug
        if getattr(args, "debug", False):
            raise
        print(f"error: {error_line(err)}\n(run with --debug for the traceback)", file=sys.stderr)
        return 2


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a problem with the user's inputs (printed without their type name)."""
    from vidtempo.config.errors import RecipeError
    from vidtempo.data.errors import DataError
    from vidtempo.registry import RegistryError
    from vidtempo.training.skips import TooManySkippedError

    return (RecipeError, RegistryError, UserError, DataError, FileNotFoundError, ValueError, TooManySkippedError)


def error_line(err: BaseException) -> str:
    """One line for ``err``: its message (a DataLoader worker's error: the original one, not the wrapper's
    traceback), prefixed with the type name unless it is a user error.

    Example:
        >>> error_line(UserError("runs/x/final/vidtempo.json: empty file"))
        'runs/x/final/vidtempo.json: empty file'
        >>> error_line(KeyError("model"))
        "KeyError: 'model'"
    """
    text = str(err).strip()
    if "Original Traceback" in text:  # torch re-raises a worker's error with the worker's traceback
        text = text.splitlines()[-1].split(": ", 1)[-1]
    line = " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(err).__name__
    return line if isinstance(err, _user_error_types()) else f"{type(err).__name__}: {line}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
