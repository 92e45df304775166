"""A researcher's own objective, collator and auxiliary loss, outside vidtempo and registered nowhere: recipes
name them by dotted path (``test_plugins.py`` puts this folder on ``sys.path``).

* :class:`AnswerCountingCollator` adds ``batch.answer_tokens`` (B,): the supervised tokens of each sample.
* :class:`SampleMeanSFT` averages the next-token loss per sample first (every sample weighs the same, whatever
  its answer length), from the model's logits and the collator's counts, and logs the mean answer length.
* :class:`BrightnessProbe` predicts each frame's mean brightness from the vision encoder's features (MSE).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vidtempo.data.collate import VideoCollator
from vidtempo.models.interfaces import IGNORE_INDEX, VideoModel, VideoModelOutput
from vidtempo.training.auxiliary import AuxLoss
from vidtempo.training.objective import Objective


class AnswerCountingCollator(VideoCollator):
    def __call__(self, samples: list[Any]) -> Any:
        batch = super().__call__(samples)
        batch.answer_tokens = (batch.labels != IGNORE_INDEX).sum(dim=1)  # (B,)
        return batch


class SampleMeanSFT(Objective):
    collator_class = AnswerCountingCollator

    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, Any]]:
        out = self.model(**batch.model_inputs(), return_hidden=self.needs_hidden)
        logits, labels = out.logits[:, :-1], out.labels[:, 1:]  # (B, L'-1, V), (B, L'-1)
        token = nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=IGNORE_INDEX,
                                            reduction="none")  # fmt: skip
        counts = (labels != IGNORE_INDEX).sum(1).clamp(min=1)  # (B,): equals batch.answer_tokens
        loss = (token.sum(1) / counts).mean()
        loss = self.add_aux(loss, out, batch, stage)
        return loss, {"answer_tokens": batch.answer_tokens.float().mean()}


class BrightnessProbe(AuxLoss):
    requires = frozenset({"frame_features"})

    def bind(self, model: VideoModel, target_channels: Mapping[str, int]) -> None:
        self.head = nn.Linear(model.frame_feature_dim, 1)

    def forward(self, out: VideoModelOutput, batch: Any) -> torch.Tensor:
        features = out.info["frame_features"]  # (B, T, P, D)
        predicted = self.head(features.mean(2)).squeeze(-1)  # (B, T)
        frames = batch.frames if batch.clip_index is None else batch.frames[batch.clip_index]
        brightness = frames.float().mean(dim=(2, 3, 4))  # (B, T)
        return nn.functional.mse_loss(predicted[batch.frame_mask], brightness[batch.frame_mask])
