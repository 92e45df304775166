"""The Lightning ``Trainer`` of a recipe stage: checkpoints (atomic, last + every N steps), logs that survive a
resume, a progress bar in global steps, Ctrl-C handling, and without the libraries' noise.

Example:
    >>> quiet_libraries()  # Lightning's adverts and deprecation chatter off
    >>> isinstance(StepProgressBar(), RichProgressBar)
    True
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from vidtempo.training.checkpoints import AtomicCheckpointIO
from vidtempo.training.csv_log import ResumableCSVLogger
from vidtempo.training.interrupt import GracefulInterrupt
from vidtempo.training.perf import ThroughputMonitor
from vidtempo.training.precision import KeepFp32HalfPrecision

NOISE = (  # messages of the libraries that say nothing about the user's run
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*The number of training batches \(\d+\) is smaller than the logging interval.*",
    r".*Found \d+ module\(s\) in eval mode at the start of training.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*Experiment logs directory .* exists and is not empty.*",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage() and "litlogger" not in record.getMessage()


def quiet_libraries() -> None:
    """Silence Lightning's adverts and deprecation chatter (real warnings still show)."""
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())


class StepProgressBar(RichProgressBar):
    """Rich progress that names the global step out of ``max_steps`` (Lightning shows ``Epoch 13/-2`` for
    step-bounded runs) and keeps one bar, not one line per epoch."""

    def __init__(self) -> None:
        super().__init__(leave=False)

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        return f"step {trainer.global_step}{total} (epoch {current_epoch})"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if self.train_progress_bar_id is not None and self.progress is not None:
            self.progress.update(self.train_progress_bar_id, description=self._get_train_description(trainer.current_epoch))


class RecipeInCheckpoint(L.Callback):
    """Stores the fully resolved recipe (YAML text) and the stage's seed inside every Lightning checkpoint.

    It also stores the metrics row of the step being checkpointed, which Lightning logs only after the
    checkpoint callbacks: a run killed between the two would resume after that step without its row. On
    resume the row is logged again (the same values), so ``metrics.csv`` has every step of an uninterrupted
    run."""

    def __init__(self, recipe_yaml: str, seed: int | None = None) -> None:
        self.recipe_yaml, self.seed = recipe_yaml, seed

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["vidtempo_recipe"] = self.recipe_yaml
        if self.seed is not None:
            checkpoint["vidtempo_seed"] = self.seed
        row = _pending_row(trainer)
        if row is not None:
            checkpoint["vidtempo_pending_log"] = row

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        row = checkpoint.get("vidtempo_pending_log")
        if row:
            for logger in trainer.loggers:
                logger.log_metrics(dict(row["metrics"]), step=int(row["step"]))
                logger.save()


def _pending_row(trainer: L.Trainer) -> dict[str, Any] | None:
    """The metrics Lightning is about to log for the current training step, if it logs this step."""
    from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars

    connector = trainer._logger_connector
    if not trainer.training or not trainer.loggers or not connector.should_update_logs:
        return None
    metrics = convert_tensors_to_scalars(dict(connector.metrics["log"]))
    if not metrics:
        return None
    metrics.setdefault("epoch", trainer.current_epoch)
    return {"step": trainer.fit_loop.epoch_loop._batches_that_stepped, "metrics": metrics}


def build_trainer(stage: dict[str, Any], stage_dir: Path, recipe_yaml: str | None = None,
                  seed: int | None = None) -> L.Trainer:  # fmt: skip
    """A Lightning Trainer for one merged recipe stage, writing under ``stage_dir``."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.strategies import ModelParallelStrategy

    from vidtempo.training.strategies import resolve_strategy

    quiet_libraries()
    kwargs = dict(stage["trainer"])
    kwargs["strategy"] = resolve_strategy(kwargs.get("strategy", "auto"), kwargs.get("accelerator", "auto"),
                                          kwargs.get("devices", 1), kwargs.get("num_nodes", 1))
    kwargs.setdefault("gradient_clip_val", stage["optim"].get("grad_clip", 1.0) or None)
    kwargs.setdefault("use_distributed_sampler", False)  # VideoDataModule shards its loaders itself
    if not isinstance(kwargs["strategy"], ModelParallelStrategy):  # sharded checkpoints are directories
        kwargs["plugins"] = [*(kwargs.get("plugins") or []), AtomicCheckpointIO()]
    if str(kwargs.get("precision")) in ("bf16-true", "16-true"):  # batches' fp32_fields are never cast
        kwargs["plugins"] = [*(kwargs.get("plugins") or []), KeepFp32HalfPrecision(str(kwargs.pop("precision")))]
    ckpt = stage.get("checkpoint") or {}
    callbacks = [
        ModelCheckpoint(
            dirpath=stage_dir / "checkpoints", save_last=True, save_top_k=int(ckpt.get("save_top_k", 1)),
            every_n_train_steps=int(ckpt.get("every_n_steps", 50)) or None,
        ),
        StepProgressBar(),
        GracefulInterrupt(stage_dir / "checkpoints"),
        ThroughputMonitor(),  # perf/* every logged step (docs/performance.md)
    ]  # fmt: skip
    if recipe_yaml is not None:
        callbacks.append(RecipeInCheckpoint(recipe_yaml, seed))
    loggers = [ResumableCSVLogger(stage_dir, name="logs", version=""), TensorBoardLogger(stage_dir, name="tb", version="")]
    return L.Trainer(default_root_dir=stage_dir, callbacks=callbacks, logger=loggers, **kwargs)
