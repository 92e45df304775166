"""Supervised fine-tuning: masked next-token cross-entropy on assistant turns.

Example:
    >>> from vidtempo.training.optim import OptimSettings
    >>> import torch
    >>> module = SFTModule(model=torch.nn.Linear(2, 2), optim=OptimSettings(lr=1e-3))
    >>> module.max_skip_fraction
    0.1
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from vidtempo.data.collate import VideoCollator
from vidtempo.training.optim import OptimSettings, lightning_optimizers
from vidtempo.training.skips import SkipTracker


class SFTModule(L.LightningModule):
    """Teacher-forced SFT of a ``VideoLLM`` (or any module with the same forward contract).

    Args:
        model: the model; its ``forward(**batch.model_inputs())`` returns an object with ``.loss``.
        optim: optimiser/schedule settings (``OptimSettings`` or a dict of its fields).
        max_skip_fraction: fail the run when more than this fraction of samples could not be decoded.
    """

    def __init__(
        self, model: nn.Module, optim: OptimSettings | dict[str, Any] | None = None, max_skip_fraction: float = 0.1
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimSettings) else OptimSettings(**(optim or {}))
        self.max_skip_fraction = max_skip_fraction
        self.skips = SkipTracker(max_skip_fraction)

    collator_class = VideoCollator  # the collator this objective's batches come from

    def forward(self, batch: Any) -> Any:
        return self.model(**batch.model_inputs())

    def configure_model(self) -> None:
        """FSDP2 on ``ModelParallelStrategy`` (CPU or GPU): shard each LLM block, then the whole model."""
        from vidtempo.training.strategies import shard_for_strategy

        shard_for_strategy(self)

    def _step(self, batch: Any, stage: str) -> torch.Tensor | None:
        self.skips.update(batch, stage)
        if len(batch) == 0:
            return None  # every sample of this batch failed to decode (already counted)
        out = self(batch)
        self.log(f"{stage}/loss", out.loss, prog_bar=True, batch_size=len(batch), sync_dist=stage != "train")
        if stage == "train":
            self.log("train/video_tokens", out.num_video_tokens.float().mean(), batch_size=len(batch))
            self.log("train/skipped", float(self.skips.skipped), batch_size=len(batch))
        return out.loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        return lightning_optimizers(self.model, self.optim, self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vidtempo_skips"] = self.skips.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skips.load_state_dict(checkpoint.get("vidtempo_skips", {}))
