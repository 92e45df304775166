"""Per-frame heads across stages: saved in a stage's ``final/`` and handed to the next stage's objective.

The saliency and tag heads (``SFTModule.frame_heads``) are training-only: they are not part of the exported
model. Without a hand-over, every stage of a multi-stage recipe started them from random weights and had to
learn them again. :func:`save_heads` writes ``frame_heads.safetensors`` next to the model weights;
:func:`load_heads` copies each head whose tensors have the same names and shapes into the next objective and
leaves any other head fresh (a stage may predict other slots or tags).

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> class Obj(torch.nn.Module):
    ...     def __init__(self): super().__init__(); self.head = torch.nn.Linear(4, 2)
    ...     def frame_heads(self): return {"saliency": self.head}
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

HEADS_NAME = "frame_heads.safetensors"


def _heads(objective: Any) -> dict[str, Any]:
    fn = getattr(objective, "frame_heads", None)
    return fn() if callable(fn) else {}


def head_state(objective: Any) -> dict[str, Any]:
    """``{"<head>.<param>": tensor}`` of every per-frame head, unsharded (a collective under FSDP2: every rank
    must call it)."""
    return {f"{name}.{k}": v for name, head in _heads(objective).items() for k, v in full_state_dict(head).items()}


def save_heads(objective: Any, directory: str | Path, state: dict[str, Any] | None = None) -> Path | None:
    """Write the heads to ``directory/frame_heads.safetensors`` (nothing when the objective has none)."""
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
        file = Path(source) / HEADS_NAME
        if not file.is_file():
            return []
        saved, path = load_file(str(file)), str(file)
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
