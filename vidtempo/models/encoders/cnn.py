"""A small per-frame CNN trained from scratch, for tiny CPU recipes and ablations without a ViT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vidtempo.models.encoders.hf_vision import as_grid, check_pixels
from vidtempo.models.interfaces import VisionEncoder


class FrameCNN(VisionEncoder):
    """Strided 3x3 conv stages -> 1x1 projection -> adaptive average pool to a fixed patch grid.

    Each stage is Conv(3x3, stride 2) + GroupNorm + GELU, halving the resolution; the last feature map is
    projected to ``out_dim`` channels and average-pooled to ``grid``, giving ``h*w`` "patch" tokens.

    Args:
        out_dim: feature width D.
        channels: output channels of each strided stage.
        image_size: frames are resized to this square side.
        grid: (h, w) output patch grid.
        mean, std: input normalisation (default 0.5/0.5, i.e. pixels mapped to [-1, 1]).
        pool: ``avg`` or ``max`` pooling of the last feature map to ``grid``.

    Example:
        >>> import torch
        >>> enc = FrameCNN(out_dim=8, channels=(4, 8), image_size=32, grid=(2, 2))
        >>> feats, grid = enc.encode(torch.rand(5, 3, 20, 30))
        >>> tuple(feats.shape), grid
        ((5, 4, 8), (2, 2))
    """

    def __init__(
        self,
        out_dim: int = 64,
        channels: Sequence[int] = (16, 32),
        image_size: int = 48,
        grid: Sequence[int] | int = (3, 3),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        pool: str = "avg",
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1 or out_dim < 1:
            raise ValueError(
                f"FrameCNN: channels must be non-empty positive ints and out_dim >= 1, got "
                f"channels={channels}, out_dim={out_dim}"
            )
        self.grid = as_grid(grid, "FrameCNN grid")  # type: ignore[assignment]
        side = image_size // 2 ** len(channels)
        if side < max(self.grid):
            raise ValueError(
                f"FrameCNN: image_size={image_size} after {len(channels)} stride-2 stages is {side}x{side}, "
                f"smaller than grid={self.grid}; raise image_size or use fewer stages"
            )
        stages: list[nn.Module] = []
        prev = 3
        for c in channels:
            stages += [nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()]
            prev = c
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Conv2d(prev, out_dim, 1)
        if pool not in ("avg", "max"):
            raise ValueError(f"FrameCNN: pool must be 'avg' or 'max', got '{pool}'")
        # max keeps "is X anywhere in this cell" (a small object) instead of averaging it into the background
        self.pool = nn.AdaptiveAvgPool2d(self.grid) if pool == "avg" else nn.AdaptiveMaxPool2d(self.grid)
        self.out_dim = out_dim
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixels (N, 3, H, W) in [0, 1] -> ((N, h*w, out_dim) features, (h, w) grid)."""
        check_pixels(pixels, "FrameCNN")
        x = self.preprocess(pixels, self.mean, self.std).to(self.proj.weight.dtype)  # (N, 3, S, S)
        x = self.pool(self.proj(self.stages(x)))  # (N, out_dim, h, w)
        return x.flatten(2).transpose(1, 2), self.grid  # (N, h*w, out_dim)
