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


def pool_audio_batch(
    feats: torch.Tensor,
    times: torch.Tensor,
    mask: torch.Tensor,
    frame_times: torch.Tensor,
    frame_mask: torch.Tensor,
    tokens: int,
    window: float = 1.0,
) -> torch.Tensor:
    """:func:`pool_audio_per_frame` for a whole batch at once (no per-video loop, no host transfer).

    Args:
        feats: (B, A, Da) audio features; times: (B, A) step times in seconds; mask: (B, A) valid steps.
        frame_times: (B, T) frame times, ascending over each row's valid frames; frame_mask: (B, T) bool,
            the valid frames (a right-padded prefix).
        tokens: output tokens per frame. window: seconds per frame window.

    Returns:
        (B, T, tokens, Da) pooled audio; padded frames get zeros. Row b's valid frames equal
        ``pool_audio_per_frame(feats[b], times[b], mask[b], frame_times[b][frame_mask[b]], tokens, window)``.

    Example:
        >>> import torch
        >>> feats = torch.arange(8.0).view(2, 4, 1)
        >>> times = (torch.arange(4) * 0.5 + 0.25).expand(2, 4)
        >>> out = pool_audio_batch(feats, times, torch.ones(2, 4, dtype=torch.bool), torch.tensor([[0.5, 1.5]] * 2),
        ...                        torch.tensor([[True, True], [True, False]]), 1)
        >>> out[..., 0, 0].tolist()
        [[0.5, 2.5], [5.5, 0.0]]
    """
    b, a, d = feats.shape
    t = frame_times.shape[1]
    fmask, amask = frame_mask.bool(), mask.bool()
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=feats.device)
    key = torch.where(amask, times.double(), inf)  # (B, A): invalid steps sort last
    key, order = torch.sort(key, dim=1, stable=True)
    sorted_feats = torch.gather(feats, 1, order[..., None].expand(-1, -1, d))  # (B, A, Da)
    valid_steps = torch.isfinite(key)  # (B, A)
    starts = torch.where(fmask, torch.floor(frame_times.double() / window) * window, inf)  # (B, T)
    # a window is identified by its last frame; frames sharing a start share the window's audio
    owner = torch.searchsorted(starts, starts, right=True) - 1  # (B, T) last frame with the same start
    step_frame = (torch.searchsorted(starts, key.contiguous(), right=True) - 1).clamp(min=0)  # (B, A)
    step_frame = torch.where(step_frame < t, step_frame, torch.zeros_like(step_frame))
    step_owner = torch.gather(owner.clamp(min=0, max=max(t - 1, 0)), 1, step_frame) if t else step_frame
    step_owner = torch.where(valid_steps, step_owner, torch.full_like(step_owner, t))  # t = dropped
    counts = torch.zeros(b, t + 1, dtype=torch.long, device=feats.device)
    counts = counts.scatter_add(1, step_owner, torch.ones_like(step_owner))[:, :t]  # (B, T) steps per window
    first = torch.cumsum(counts, 1) - counts  # (B, T) offset of each window's first step (sorted order)
    i = torch.arange(tokens, device=feats.device)  # adaptive pooling bins: [floor(i n / k), ceil((i+1) n / k))
    lo = first[..., None] + torch.div(i * counts[..., None], tokens, rounding_mode="floor")  # (B, T, k)
    hi = first[..., None] + torch.div((i + 1) * counts[..., None] + tokens - 1, tokens, rounding_mode="floor")
    csum = torch.cat([feats.new_zeros(b, 1, d, dtype=torch.float64), sorted_feats.double().cumsum(1)], dim=1)
    flat = csum.reshape(b * (a + 1), d)
    base = (torch.arange(b, device=feats.device) * (a + 1))[:, None, None]
    sums = flat[(base + hi).flatten()] - flat[(base + lo).flatten()]  # (B*T*k, Da)
    n = (hi - lo).clamp(min=1).reshape(-1, 1)
    pooled = (sums / n).to(feats.dtype).view(b, t, tokens, d)  # per window owner (B, T, k, Da)
    pooled = torch.gather(pooled, 1, owner.clamp(min=0, max=max(t - 1, 0))[..., None, None].expand_as(pooled))
    return pooled * fmask[..., None, None].to(pooled.dtype)
