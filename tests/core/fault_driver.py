"""Run a tiny training recipe and kill the process (SIGKILL, or Ctrl-C's SIGINT) at a chosen write point.

Used by tests/core/test_faults.py as ``python fault_driver.py CASE RECIPE_JSON``: a real process dies at a
real moment, so what is left on disk is what a crash leaves (no ``finally`` runs, no temp file is cleaned).

Cases:
    final_mid     SIGKILL inside final/'s writer, after the model weights, before the heads and the recipe
    first_last    SIGKILL halfway through writing the first last.ckpt (the step checkpoint is complete)
    sigint_step2  Ctrl-C (SIGINT to itself) during step 2
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(case: str) -> None:
    """Patch the write point of ``case`` so that the process dies there."""
    if case == "final_mid":
        import vidtempo.training.run as run

        def save_heads_then_die(*args, **kwargs):
            _kill()

        run.save_heads = save_heads_then_die
    elif case == "first_last":
        import torch

        from vidtempo.training.checkpoints import AtomicCheckpointIO

        original = AtomicCheckpointIO.save_checkpoint

        def save(self, checkpoint, path, storage_options=None):
            path = Path(path)
            if path.name != "last.ckpt":
                return original(self, checkpoint, path, storage_options)
            tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
            with open(tmp, "wb") as file:  # what an interrupted save leaves: half a file under a temp name
                torch.save(checkpoint, file)
                file.truncate(file.tell() // 2)
            _kill()

        AtomicCheckpointIO.save_checkpoint = save
    elif case == "sigint_step2":
        from vidtempo.training.interrupt import GracefulInterrupt

        original_end = GracefulInterrupt.on_train_batch_end

        def end(self, trainer, pl_module, *args):
            if trainer.global_step == 2 and not self.requested:
                os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during step 2
            return original_end(self, trainer, pl_module, *args)

        GracefulInterrupt.on_train_batch_end = end
    else:
        raise SystemExit(f"unknown case {case}")


def main() -> int:
    case, recipe_json = sys.argv[1], sys.argv[2]
    from omegaconf import OmegaConf

    from vidtempo.cli.main import main as cli

    arm(case)
    cfg = OmegaConf.create(json.loads(Path(recipe_json).read_text()))
    path = Path(recipe_json).with_suffix(".yaml")
    OmegaConf.save(cfg, path)
    return cli(["train", str(path)])


if __name__ == "__main__":
    sys.exit(main())
