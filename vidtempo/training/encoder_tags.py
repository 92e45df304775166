"""Per-frame tag loss on the vision encoder's own features ("what is on screen?", before any compressor).

``SFTModule``'s tag head (``tag_weight``) reads the LLM's hidden states, so its gradient reaches the vision
encoder only through the LLM, the projector and the compressor. This head reads each frame's encoder features
directly: the patch features of a frame are max-pooled over the patch grid (presence anywhere in the frame)
and a linear layer scores each tag, compared with ``batch.frame_tags`` by binary cross-entropy. It is deep
supervision of the encoder (as in GoogLeNet's auxiliary classifiers): the encoder is told what each frame
shows from the first step, whatever the rest of the model makes of it. Visual tags only: audio tags (a beep
heard near a frame) are not in the pixels, so ``slots`` picks the tag columns it predicts.

Example:
    >>> import torch
    >>> loss_fn = EncoderTagLoss(feature_dim=8, slots=2)
    >>> feats = torch.randn(1, 3, 4, 8)                       # (B, T, P, D): 3 frames, 4 patches
    >>> tags = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])   # (B, T, C)
    >>> loss = loss_fn(feats, torch.ones(1, 3, dtype=torch.bool), tags)
    >>> loss.ndim
    0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vidtempo.training.saliency import slot_indices


class EncoderTagLoss(nn.Module):
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
                f"encoder tag slot {max(self.slots)} requested, but batch.frame_tags has {frame_tags.shape[-1]} "
                "tags (data.collator.frame_tags)"
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


def vision_feature_dim(model: nn.Module) -> int:
    """The feature width of a ``VideoLLM``'s vision encoder; a clear error for models without one."""
    encoder = getattr(model, "vision_encoder", None)
    width = getattr(encoder, "out_dim", None)
    if width is None:
        raise ValueError(f"encoder_tag_weight needs a vision encoder with out_dim; {type(model).__name__} has none")
    return int(width)
