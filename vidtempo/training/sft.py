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
from vidtempo.training.saliency import FrameSaliencyLoss
from vidtempo.training.skips import SkipTracker


class SFTModule(L.LightningModule):
    """Teacher-forced SFT of a ``VideoLLM`` (or any module with the same forward contract).

    Args:
        model: the model; its ``forward(**batch.model_inputs())`` returns an object with ``.loss``.
        optim: optimiser/schedule settings (``OptimSettings`` or a dict of its fields).
        max_skip_fraction: fail the run when more than this fraction of samples could not be decoded.
        saliency_weight: weight of the per-frame saliency loss (``vidtempo.training.saliency``) added to the
            next-token loss; 0 = off. Needs ``data.collator.frame_targets: true`` and the video after the
            question (``video_position: after_text``). The head is trained with the model but is not part of
            the exported model.
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimSettings | dict[str, Any] | None = None,
        max_skip_fraction: float = 0.1,
        saliency_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimSettings) else OptimSettings(**(optim or {}))
        self.max_skip_fraction = max_skip_fraction
        self.skips = SkipTracker(max_skip_fraction)
        self.saliency_weight = float(saliency_weight)
        self.saliency = FrameSaliencyLoss(llm_hidden_size(model)) if self.saliency_weight else None

    collator_class = VideoCollator  # the collator this objective's batches come from

    def forward(self, batch: Any) -> Any:
        return self.model(**batch.model_inputs(), **({"output_hidden_states": True} if self.saliency else {}))

    def configure_model(self) -> None:
        """FSDP2 on ``ModelParallelStrategy`` (CPU or GPU): shard each LLM block, then the whole model."""
        from vidtempo.training.strategies import shard_for_strategy

        shard_for_strategy(self)

    def _step(self, batch: Any, stage: str) -> torch.Tensor | None:
        self.skips.update(batch, stage)
        if len(batch) == 0:
            return None  # every sample of this batch failed to decode (already counted)
        out = self(batch)
        loss = out.loss
        sync = stage != "train"
        if self.saliency is not None:
            saliency = self._saliency_loss(out, batch)
            self.log(f"{stage}/lm_loss", out.loss, batch_size=len(batch), sync_dist=sync)
            self.log(f"{stage}/saliency_loss", saliency, batch_size=len(batch), sync_dist=sync)
            loss = loss + self.saliency_weight * saliency
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=sync)
        if stage == "train":
            self.log("train/video_tokens", out.num_video_tokens.float().mean(), batch_size=len(batch))
            self.log("train/skipped", float(self.skips.skipped), batch_size=len(batch))
        return loss

    def _saliency_loss(self, out: Any, batch: Any) -> torch.Tensor:
        assert self.saliency is not None
        if batch.frame_targets is None:
            raise ValueError(
                "objective.saliency_weight > 0 needs per-frame targets: set data.collator.frame_targets: true"
            )
        return self.saliency(out.last_hidden_state, batch.input_ids, batch.attention_mask,
                             out.num_video_tokens, batch.frame_mask, batch.frame_targets)  # fmt: skip

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        extra = {"saliency": self.saliency} if self.saliency is not None else None
        return lightning_optimizers(self.model, self.optim, self.trainer, extra=extra)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vidtempo_skips"] = self.skips.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skips.load_state_dict(checkpoint.get("vidtempo_skips", {}))


def llm_hidden_size(model: nn.Module) -> int:
    """Hidden size of a ``VideoLLM``'s LLM (or of a model with a transformers ``config``)."""
    llm = getattr(model, "llm", None)
    if llm is not None and hasattr(llm, "hidden_size"):
        return int(llm.hidden_size)
    config = getattr(model, "config", None)
    size = getattr(getattr(config, "text_config", config), "hidden_size", None)
    if size is None:
        raise ValueError(f"saliency_weight needs the LLM hidden size; {type(model).__name__} exposes none")
    return int(size)
