"""Projectors: map compressor tokens (width D) to the LLM hidden size H.

Example:
    >>> import torch
    >>> MLPProjector(8, 16)(torch.zeros(2, 3, 8)).shape
    torch.Size([2, 3, 16])
"""

from __future__ import annotations

import torch
from torch import nn


class MLPProjector(nn.Module):
    """LLaVA-1.5's ``mlp2x_gelu``: Linear(D, H) -> GELU -> Linear(H, H)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        hidden = hidden_dim or out_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (..., D) -> (..., H)


class LinearProjector(nn.Module):
    """A single Linear(D, H)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class IdentityProjector(nn.Module):
    """Pass-through projector for compressors that already emit LLM-width tokens (TDC).

    Args:
        dim: token width (both ``in_dim`` and ``out_dim``, checked by ``VideoLLM`` against its parts).

    Example:
        >>> import torch
        >>> IdentityProjector(8)(torch.ones(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_dim = self.out_dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
