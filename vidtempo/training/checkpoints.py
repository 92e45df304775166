"""Lightning checkpoints that survive a crash: written atomically beside their final name, and on resume the
newest *intact* one is chosen, not blindly ``last.ckpt``.

* :class:`AtomicCheckpointIO`: ``torch.save`` into a temp file in the checkpoint's own directory, fsync,
  ``os.replace``. Lightning's default writes through a temp file in ``$TMPDIR``; killed mid-save it left a
  checkpoint-sized file there, and moved across filesystems it could leave a truncated ``last.ckpt``.
* :func:`newest_intact_checkpoint`: every ``*.ckpt`` of a run (files, or the directories of sharded FSDP2
  checkpoints) that loads (``torch.load(weights_only=True)``: a checkpoint is data, never code), the one with
  the highest global step; damaged ones are named in a warning and skipped.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> AtomicCheckpointIO().save_checkpoint({"global_step": 3}, d / "epoch=0-step=3.ckpt")
    >>> _ = (d / "last.ckpt").write_bytes(b"truncated")
    >>> newest_intact_checkpoint(d).name
    'epoch=0-step=3.ckpt'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from vidtempo.utils.atomic import remove_stale_temps

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose files appear complete or not at all (temp file in the same directory)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _step_of(path: Path) -> int | None:
    """The global step of an intact checkpoint, None when it is damaged or incomplete."""
    try:
        if path.is_dir():  # a sharded (distributed) checkpoint: complete once torch.distributed wrote .metadata
            if not (path / ".metadata").is_file():
                return None
            meta = path / "meta.pt"
            state = torch.load(meta, map_location="cpu", weights_only=True) if meta.is_file() else {}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state.get("global_step", -1))
    except Exception as err:  # noqa: BLE001 - any failure to read means "not intact"
        log.warning("checkpoint %s is damaged or incomplete (%s: %s); resuming from another one",
                    path, type(err).__name__, str(err).splitlines()[0][:200])  # fmt: skip
        return None


def newest_intact_checkpoint(directory: str | Path) -> Path | None:
    """The intact checkpoint with the highest global step in ``directory`` (``last.ckpt`` wins ties), or None.
    Temp files of interrupted saves are removed on the way."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for leftover in directory.glob(".*.tmp-*"):
        leftover.unlink(missing_ok=True)
    remove_stale_temps(directory / "last.ckpt")
    best: tuple[int, bool, Path] | None = None
    for path in sorted(directory.glob("*.ckpt")):
        step = _step_of(path)
        if step is None:
            continue
        key = (step, path.name == "last.ckpt", path)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None
