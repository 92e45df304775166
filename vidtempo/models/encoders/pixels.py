"""Raw pixel patches as features (no learned weights): each frame is resized to ``image_size`` and cut into
``patch`` x ``patch`` cells whose RGB values are the features. A baseline that separates "can the rest of the
model read the frames" from "can the encoder learn features", and a fast encoder for synthetic data.

Example:
    >>> import torch
    >>> feats, grid = PixelPatchEncoder(image_size=16, patch=8).encode(torch.rand(2, 3, 32, 32))
    >>> tuple(feats.shape), grid
    ((2, 4, 192), (2, 2))
"""

from __future__ import annotations

import torch

from vidtempo.models.interfaces import VisionEncoder


class PixelPatchEncoder(VisionEncoder):
    """Non-learned patch features: (N, 3, H, W) -> (N, (S/p)^2, 3 p^2), values normalised to [-1, 1].

    Args:
        image_size: frames are resized to this square side S.
        patch: cell side p (S must be a multiple of p).
    """

    def __init__(self, image_size: int = 16, patch: int = 16) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"PixelPatchEncoder: image_size={image_size} is not a multiple of patch={patch}")
        self.image_size, self.patch = int(image_size), int(patch)
        self.out_dim = 3 * patch * patch
        self.register_buffer("_dtype_probe", torch.zeros(0), persistent=False)

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.preprocess(pixels, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).to(self._dtype_probe.dtype)  # (N, 3, S, S)
        g = self.image_size // self.patch
        x = x.unfold(2, self.patch, self.patch).unfold(3, self.patch, self.patch)  # (N, 3, g, g, p, p)
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], g * g, self.out_dim)  # (N, g*g, 3 p^2)
        return x, (g, g)
