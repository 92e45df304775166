"""Auxiliary-loss heads across stages: saved in a stage's ``final/`` and handed to the next stage's objective.

The heads of auxiliary losses (``objective.aux``, each loss's ``handover_module()``) are training-only: they
are not part of the exported model. Without a hand-over, every stage of a multi-stage recipe started them
from random weights and had to learn them again. :func:`save_heads` writes ``aux_heads.safetensors`` next to
the model weights; :func:`load_heads` copies each head whose tensors have the same names and shapes into the
next objective's loss of the same name and leaves any other head fresh (a stage may predict other slots or
tags). Checkpoints written before auxiliary losses were plug-ins (``frame_heads.safetensors``, heads named
``tags`` / ``encoder_tags``) load too.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> class Obj(torch.nn.Module):
    ...     def __init__(self): super().__init__(); self.head = torch.nn.Linear(4, 2)
    ...     def aux_heads(self): return {"saliency": self.head}
    >>> d = Path(tempfile.mkdtemp()); a, b = Obj(), Obj()
    >>> _ = save_heads(a, d); load_heads(b, d), torch.equal(a.head.weight, b.head.weight)
    (['saliency'], True)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from vidtempo.training.strategies import full_state_dict

log = logging.getLogger(__name__)

HEADS_NAME = "aux_heads.safetensors"
LEGACY_HEADS_NAME = "frame_heads.safetensors"  # before auxiliary losses were plug-ins
LEGACY_NAMES = {"tags": "tag", "encoder_tags": "encoder_tag"}  # the recipe keys that replaced them


def _heads(objective: Any) -> dict[str, Any]:
    """{name: module} to hand over: ``objective.aux_heads()`` when defined, else each auxiliary loss's
    ``handover_module()``."""
    fn = getattr(objective, "aux_heads", None)
    if callable(fn):
        return fn()
    aux = getattr(objective, "aux", None) or {}
    return {name: loss.handover_module() for name, loss in aux.items()}


def has_heads(directory: str | Path) -> bool:
    """Whether a ``final/`` directory holds auxiliary heads (current or legacy file)."""
    return (Path(directory) / HEADS_NAME).is_file() or (Path(directory) / LEGACY_HEADS_NAME).is_file()


def _read(directory: Path) -> tuple[dict[str, Any], str] | None:
    for name in (HEADS_NAME, LEGACY_HEADS_NAME):
        file = directory / name
        if file.is_file():
            saved = load_file(str(file))
            if name == LEGACY_HEADS_NAME:
                saved = {_renamed(k): v for k, v in saved.items()}
            return saved, str(file)
    return None


def _renamed(key: str) -> str:
    head, _, rest = key.partition(".")
    return f"{LEGACY_NAMES.get(head, head)}.{rest}"


def head_state(objective: Any) -> dict[str, Any]:
    """``{"<head>.<param>": tensor}`` of every per-frame head, unsharded (a collective under FSDP2: every rank
    must call it)."""
    return {f"{name}.{k}": v for name, head in _heads(objective).items()
            for k, v in full_state_dict(head, every_rank=True).items()}  # fmt: skip


def save_heads(objective: Any, directory: str | Path, state: dict[str, Any] | None = None) -> Path | None:
    """Write the heads to ``directory/aux_heads.safetensors`` (nothing when the objective has none)."""
    state = head_state(objective) if state is None else state
    if not state:
        return None
    path = Path(directory) / HEADS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
    return path


def load_heads(objective: Any, source: str | Path | dict[str, Any]) -> list[str]:
    """Load the heads whose tensors fit, from a ``final/`` directory or from a :func:`head_state` dict (the
    stage that just ended, in memory: under several processes only rank 0 writes the file, so the other ranks
    must not wait for it). Returns the names of the loaded heads."""
    if isinstance(source, dict):
        saved, path = source, "the previous stage"
    else:
        found = _read(Path(source))
        if found is None:
            return []
        saved, path = found
    loaded = []
    for name, head in _heads(objective).items():
        mine = head.state_dict()
        theirs = {k.removeprefix(f"{name}."): v for k, v in saved.items() if k.startswith(f"{name}.")}
        if theirs.keys() == mine.keys() and all(theirs[k].shape == mine[k].shape for k in mine):
            head.load_state_dict(theirs)
            loaded.append(name)
        elif theirs:
            log.info("%s: the %s head does not fit this stage's (other slots or tags): it starts fresh", path, name)
    return loaded
