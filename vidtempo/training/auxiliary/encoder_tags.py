"""Per-frame tag loss on the vision encoder's own features ("what is on screen?", before any compressor).

The ``frame_tags`` auxiliary loss reads the LLM's hidden states, so its gradient reaches the vision
encoder only through the LLM, the projector and the compressor. This head reads each frame's encoder features
directly: the patch features of a frame are max-pooled over the patch grid (presence anywhere in the frame)
and a linear layer scores each tag, compared with ``batch.frame_tags`` by binary cross-entropy. It is deep
supervision of the encoder (as in GoogLeNet's auxiliary classifiers): the encoder is told what each frame
shows from the first step, whatever the rest of the model makes of it. Visual tags only: audio tags (a beep
heard near a frame) are not in the pixels, so ``slots`` picks the tag columns it predicts.

Example:
    >>> import torch
    >>> loss_fn = EncoderTagHead(feature_dim=8, slots=2)
    >>> feats = torch.randn(1, 3, 4, 8)                       # (B, T, P, D): 3 frames, 4 patches
    >>> tags = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])   # (B, T, C)
    >>> loss = loss_fn(feats, torch.ones(1, 3, dtype=torch.bool), tags)
    >>> loss.ndim
    0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vidtempo.models.interfaces import VideoModel, VideoModelOutput
from vidtempo.training.auxiliary.base import AuxLoss
from vidtempo.training.auxiliary.frame_heads import slot_indices


class EncoderTagHead(nn.Module):
    """BCE between a linear head on each frame's max-pooled encoder features and the frame's tags.

    Args:
        feature_dim: the vision encoder's feature width D (``VisionEncoder.out_dim``).
        slots: the tag columns it predicts: a count ``n`` (columns ``0..n-1``) or a list of column indices
            (e.g. the visual tags only, when ``data.collator.frame_tags`` also lists sounds).
    """

    def __init__(self, feature_dim: int, slots: int | Sequence[int]) -> None:
        super().__init__()
        self.slots = slot_indices(slots)
        self.head = nn.Linear(feature_dim, len(self.slots))

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor, frame_tags: torch.Tensor) -> torch.Tensor:
        """Mean BCE over the valid frames' known tags (0 with none, still in the graph).

        Shapes: features (B, T, P, D) (``VideoLLM`` puts them in ``info["frame_features"]``) or (B, T, D);
        frame_mask (B, T); frame_tags (B, T, C) with NaN = unknown (padded frames, samples without events).
        """
        if frame_tags.shape[-1] <= max(self.slots):
            raise ValueError(
                f"encoder tag slot {max(self.slots)} requested, but the tag target has {frame_tags.shape[-1]} "
                "channels (data.collator.targets)"
            )
        if features.shape[:2] != frame_tags.shape[:2]:
            raise ValueError(f"frame features {tuple(features.shape[:2])} and frame_tags "
                             f"{tuple(frame_tags.shape[:2])} disagree on (B, T)")  # fmt: skip
        pooled = features.amax(2) if features.ndim == 4 else features  # (B, T, D)
        logits = self.head(pooled.to(self.head.weight.dtype))  # (B, T, S)
        targets = frame_tags[..., self.slots].to(logits.device)  # (B, T, S)
        known = ~torch.isnan(targets) & frame_mask.to(logits.device)[..., None]
        if not known.any():
            return self.head.weight.sum() * 0.0
        return nn.functional.binary_cross_entropy_with_logits(logits[known].float(), targets[known].float())


class EncoderTagLoss(AuxLoss):
    """The auxiliary loss (alias ``encoder_tags``) around :class:`EncoderTagHead`: reads the model's per-frame
    encoder features (capability ``frame_features``) and ``batch.targets['frame_tags']`` by default.

    Args:
        weight: loss weight. target: the batch target it reads.
        slots: the tag columns it predicts (a count or a list; default every channel of the target). Give
            the visual ones when the tags also list sounds, e.g. ``12`` for the first 12.

    Example:
        >>> EncoderTagLoss(slots=12).requires
        frozenset({'frame_features'})
    """

    requires = frozenset({"frame_features"})
    default_target = "frame_tags"

    def __init__(self, weight: float = 1.0, target: str | None = None, slots: int | Sequence[int] | None = None):
        super().__init__(weight, target)
        if slots is not None:
            slot_indices(slots)
        self.slots = slots
        self.scorer: EncoderTagHead | None = None

    def bind(self, model: VideoModel, target_channels: Mapping[str, int]) -> None:
        slots = self.slots if self.slots is not None else target_channels[self.target]
        self.scorer = EncoderTagHead(model.frame_feature_dim, slots)

    def forward(self, out: VideoModelOutput, batch: Any) -> torch.Tensor:
        assert self.scorer is not None, "bind() was not called"
        features = out.info.get("frame_features")
        if features is None:
            raise ValueError("encoder_tags needs the model's per-frame encoder features in info['frame_features']")
        return self.scorer(features, batch.frame_mask, self.batch_target(batch))

    def handover_module(self) -> nn.Module:
        assert self.scorer is not None
        return self.scorer
