"""Per-frame audio windows: which audio steps belong to which video frame (shared by ``tdc`` and ``pool``)."""

from __future__ import annotations

import torch


def pool_audio_per_frame(
    feats: torch.Tensor,
    times: torch.Tensor,
    mask: torch.Tensor,
    frame_times: torch.Tensor,
    tokens: int,
    window: float = 1.0,
) -> torch.Tensor:
    """Pool the audio of each frame's window to ``tokens`` tokens (adaptive average pooling, as TDC).

    Frame j owns the audio from ``floor(t_j / window) * window`` up to the start of the next frame's window
    (audio of seconds whose frame was dropped joins the preceding kept frame, as TDC; audio before the first
    frame joins the first). Frames sharing a window share its audio. An empty window gives zeros.

    Args:
        feats: (A, Da) audio features of one video; times: (A,) step times in seconds; mask: (A,) valid steps.
        frame_times: (T,) ascending frame times in seconds.
        tokens: output tokens per frame (TDC: 50).
        window: seconds per frame window (TDC: 1).

    Returns:
        (T, tokens, Da) pooled audio.

    Example:
        >>> import torch
        >>> times = torch.arange(4) * 0.5 + 0.25  # 2 steps per second over 2 s
        >>> feats = torch.arange(4.0)[:, None]
        >>> pool_audio_per_frame(feats, times, torch.ones(4, dtype=torch.bool), torch.tensor([0.5, 1.5]), 1)
        tensor([[[0.5000]],
        <BLANKLINE>
                [[2.5000]]])
    """
    t = frame_times.shape[0]
    feats, times = feats[mask.bool()], times[mask.bool()]  # (A', Da), (A',)
    order = torch.argsort(times)
    feats, times = feats[order], times[order]
    starts = torch.floor(frame_times.double() / window) * window  # (T,)
    groups, group_of_frame = torch.unique_consecutive(starts, return_inverse=True)  # (G,), (T,)
    step_group = (torch.searchsorted(groups, times.double(), right=True) - 1).clamp(min=0)  # (A',)
    counts = torch.bincount(step_group, minlength=len(groups))  # (G,) steps per window
    first = torch.cumsum(counts, 0) - counts  # (G,) offset of each window's first step
    i = torch.arange(
        tokens, device=feats.device
    )  # adaptive pooling bins: [floor(i n / k), ceil((i+1) n / k))
    lo = first[:, None] + torch.div(i[None] * counts[:, None], tokens, rounding_mode="floor")  # (G, k)
    hi = first[:, None] + torch.div(
        (i[None] + 1) * counts[:, None] + tokens - 1, tokens, rounding_mode="floor"
    )
    csum = torch.cat([feats.new_zeros(1, feats.shape[1], dtype=torch.float64), feats.double().cumsum(0)])
    sums = csum[hi] - csum[lo]  # (G, k, Da)
    n = (hi - lo).clamp(min=1).unsqueeze(-1)
    pooled = (sums / n).to(feats.dtype)  # (G, k, Da); empty windows are zeros
    return pooled[group_of_frame] if t else pooled[:0]  # (T, k, Da)
