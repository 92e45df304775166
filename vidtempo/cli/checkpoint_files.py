"""Check a checkpoint directory's files before a command loads it, so a damaged or partial checkpoint ends in
one line naming the file and what was expected (not a JSON or safetensors traceback from deep inside).

Example:
    >>> import tempfile
    >>> check_checkpoint(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vidtempo.cli.checkpoint_files.CheckpointFileError: .../vidtempo.json: file not found; expected a vidtempo checkpoint directory (a run's final/, e.g. runs/NAME/0_sft/final)
"""

from __future__ import annotations

import json
from pathlib import Path

from vidtempo.cli.main import UserError

CONFIG_NAME = "vidtempo.json"  # the names vidtempo.models.checkpoint writes
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILES = ("tokenizer_config.json",)  # with one of VOCAB_FILES
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
EXAMPLE = "a run's final/, e.g. runs/NAME/0_sft/final"


class CheckpointFileError(UserError):
    """A checkpoint file is missing, empty or damaged (names the file and what was expected)."""


def check_checkpoint(directory: str | Path, *, tokenizer: bool = True) -> None:
    """Raise ``CheckpointFileError`` unless ``directory`` holds a readable ``vidtempo.json`` (a JSON object with a
    ``model`` node), a complete ``model.safetensors`` and (``tokenizer``) the tokenizer files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointFileError(f"{directory}: checkpoint directory not found; expected {EXAMPLE}")
    _check_config(directory / CONFIG_NAME)
    _check_weights(directory / WEIGHTS_NAME)
    if tokenizer:
        _check_tokenizer(directory)


def _check_config(path: Path) -> None:
    expected = "the JSON object save_pretrained writes (with a 'model' node)"
    if not path.is_file():
        raise CheckpointFileError(f"{path}: file not found; expected a vidtempo checkpoint directory ({EXAMPLE})")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise CheckpointFileError(f"{path}: empty file; expected {expected} (an interrupted save? train again)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointFileError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); expected {expected}") from err
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointFileError(f"{path}: no 'model' node; expected {expected}")


def _check_weights(path: Path) -> None:
    if not path.is_file():
        raise CheckpointFileError(f"{path}: file not found; expected the checkpoint's weights")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            handle.keys()
    except SafetensorError as err:
        raise CheckpointFileError(f"{path}: damaged or truncated ({err}); expected a complete safetensors "
                                  "file (an interrupted save or copy? copy or train it again)") from err  # fmt: skip


def _check_tokenizer(directory: Path) -> None:
    missing = [name for name in TOKENIZER_FILES if not (directory / name).is_file()]
    if missing or not any((directory / name).is_file() for name in VOCAB_FILES):
        wanted = ", ".join([*TOKENIZER_FILES, " or ".join(VOCAB_FILES)])
        raise CheckpointFileError(f"{directory}: no tokenizer files; expected {wanted} (what training saves with "
                                  "the weights)")  # fmt: skip
