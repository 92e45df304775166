"""Sinusoidal embeddings of absolute time in seconds (added to frame tokens so the LLM can read time).

Example:
    >>> import torch
    >>> sinusoidal_time_embedding(torch.tensor([[0.0, 1.5]]), dim=8).shape
    torch.Size([1, 2, 8])
"""

from __future__ import annotations

import math

import torch


def sinusoidal_time_embedding(seconds: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """(…,) seconds -> (…, dim) [sin, cos] features over geometric periods from ~1 s to ``max_period`` s."""
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    half = dim // 2
    # periods 2*pi * max_period^(i/half): the fastest component resolves sub-second differences
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=seconds.device) / half)
    angles = seconds.float().unsqueeze(-1) * freqs  # (..., half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
