"""Ctrl-C during training: finish the current step, save a checkpoint, stop, and say how to resume.

Lightning's own handling of ``KeyboardInterrupt`` stops wherever the signal lands (possibly inside an
optimiser step) and saves nothing. :class:`GracefulInterrupt` turns the first SIGINT into a request that is
honoured after the running step: it writes ``checkpoints/last.ckpt`` and sets ``trainer.should_stop``; the
caller then reports the interruption (``vidtempo.training.run``). A second Ctrl-C interrupts at once.

Example:
    >>> import tempfile
    >>> cb = GracefulInterrupt(tempfile.mkdtemp())
    >>> cb.requested
    False
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class GracefulInterrupt(L.Callback):
    """Save ``<checkpoint_dir>/last.ckpt`` and stop after the step during which Ctrl-C was pressed."""

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)  # a second Ctrl-C: at once
        print("\nCtrl-C: finishing the current step and saving a checkpoint (press again to stop at once)",
              file=sys.stderr)  # fmt: skip

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.requested and not trainer.should_stop:
            trainer.save_checkpoint(self.checkpoint_dir / "last.ckpt")
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
