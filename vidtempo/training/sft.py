"""Supervised fine-tuning: masked next-token cross-entropy on assistant turns (+ auxiliary losses).

Example:
    >>> import torch
    >>> module = SFTModule(model=torch.nn.Linear(2, 2), optim={"lr": 1e-3})
    >>> module.max_skip_fraction, module.collator_class.__name__
    (0.1, 'VideoCollator')
"""

from __future__ import annotations

from typing import Any

import torch

from vidtempo.training.objective import Objective


class SFTModule(Objective):
    """Teacher-forced SFT of a ``VideoModel``: its ``forward(**batch.model_inputs())`` returns ``.loss``.

    Arguments are :class:`~vidtempo.training.objective.Objective`'s: ``model``, ``optim``,
    ``max_skip_fraction``, ``aux`` (auxiliary losses, e.g. the per-frame heads of the TempoSynth recipes,
    ``vidtempo.training.auxiliary``) and ``targets``. The LM head runs only at the labelled positions, in chunks
    (``Objective.loss_head``): no (B, L, V) logits. Logged per step: ``loss`` (the total), ``lm_loss`` (the
    next-token loss, when auxiliary losses are on), ``video_tokens`` and, when the compressor's budget guard
    cut tokens, ``trimmed_tokens`` (per sample).
    """

    def forward(self, batch: Any) -> Any:
        return self.model(**batch.model_inputs(), **({"return_hidden": True} if self.needs_hidden else {}),
                          **self.head_kwargs())

    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, Any]]:
        out = self(batch)
        n, sync = len(batch), stage != "train"
        if len(self.aux):
            self.log(f"{stage}/lm_loss", out.loss, batch_size=n, sync_dist=sync)
        loss = self.add_aux(out.loss, out, batch, stage)
        metrics: dict[str, Any] = {}
        if stage == "train":
            metrics["video_tokens"] = out.num_video_tokens.float().mean()
            if "trimmed" in out.info:  # a compressor's budget guard (tdc ``max_tokens``) cut tokens: per sample
                metrics["trimmed_tokens"] = float(out.info["trimmed"]) / n
        return loss, metrics
