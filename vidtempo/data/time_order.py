"""Put a collated batch's frames (and their audio windows) in another time order, in place.

Used by the eval's time control (``vidtempo.eval.controls``) and by self-generated answer pairs
(``vidtempo.prefgen.answers``). Timestamps are not touched: frame ``j`` keeps its time ``t_j`` and shows the
content of frame ``order[j]``.

Example:
    >>> import torch
    >>> permute_audio_windows(torch.arange(6.0), 6, [2, 0, 1]).tolist()
    [4.0, 5.0, 0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vidtempo.data.log_mel import HOP_LENGTH


def permute_audio_windows(wave: torch.Tensor, length: int, perm: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Permute ``len(perm)`` equal windows of ``wave[..., :length]`` along the last (time) axis: (S,) waveform
    or (n_mels, F) log-mel; same shape out, padding stays at the end."""
    bounds = np.linspace(0, length, len(perm) + 1).round().astype(int)
    windows = [wave[..., bounds[k] : bounds[k + 1]] for k in range(len(perm))]
    out = wave.clone()
    out[..., :length] = torch.cat([windows[k] for k in perm], dim=-1) if windows else wave[..., :0]
    return out


def audio_steps(audio: torch.Tensor, samples: int) -> int:
    """Valid time steps of one row of ``batch.audio``: samples for a waveform (B, S), 10-ms log-mel frames for
    (B, n_mels, F) (``VideoCollator(audio_mel=...)``)."""
    return samples if audio.ndim == 2 else min(samples // HOP_LENGTH, audio.shape[-1])


def permute_frames(batch: Any, orders: list[np.ndarray | None]) -> Any:
    """Reorder each row's valid frames (and its audio windows, the same way) in place: frame ``j`` shows what
    frame ``orders[i][j]`` showed; timestamps untouched; ``None`` leaves a row as it is. Each applied order is
    recorded in ``meta[i]["time_permutation"]``.

    Shapes: frames (B, T, 3, H, W), frame_mask (B, T), audio (B, S) or log-mel (B, n_mels, F) and
    audio_lengths (B,) samples when decoded. With ``batch.clip_index`` (B,) (a collator with ``share_clips``)
    frames, audio and audio_lengths hold U distinct clips: each clip is permuted once, and every row of one
    clip must ask for the same order.

    Raises:
        ValueError: an order's length is not the row's valid frame count, or two rows of one clip ask for
            different orders.
    """
    if batch.frames is None:
        return batch
    clip_of = _clip_rows(batch, len(orders))
    done: dict[int, np.ndarray | None] = {}
    for i, perm in enumerate(orders):
        perm = None if perm is None else np.asarray(perm)
        u = clip_of[i]
        if u in done:
            if not _same_order(done[u], perm):
                raise ValueError(f"row {i}: clip {u} is shared with an earlier row that has another order")
        else:
            done[u] = perm
            if perm is not None:
                _permute_clip(batch, u, batch.frame_mask[i], perm, i)
        if perm is not None and i < len(batch.meta):
            batch.meta[i] = {**batch.meta[i], "time_permutation": perm.tolist()}
    return batch


def _clip_rows(batch: Any, rows: int) -> list[int]:
    """Row -> the index of its clip in ``batch.frames``: ``clip_index`` when clips are shared, else the row."""
    index = getattr(batch, "clip_index", None)
    return list(range(rows)) if index is None else [int(u) for u in index.tolist()]


def _same_order(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _permute_clip(batch: Any, u: int, mask: torch.Tensor, perm: np.ndarray, row: int) -> None:
    """Permute clip ``u``'s valid frames (``mask`` (T,)) and audio windows by ``perm``, in place."""
    valid = mask.nonzero().flatten()  # (T_u,) indices of real frames
    if len(perm) != len(valid):
        raise ValueError(f"row {row}: an order of {len(perm)} frames for {len(valid)} valid frames")
    src = valid[torch.as_tensor(perm, dtype=torch.long)]
    batch.frames[u, valid] = batch.frames[u, src].clone()
    if batch.audio is not None and batch.audio_lengths is not None and len(valid):
        steps = audio_steps(batch.audio, int(batch.audio_lengths[u]))
        batch.audio[u] = permute_audio_windows(batch.audio[u], steps, perm)
