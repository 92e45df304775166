"""``pool`` compressor with ``temporal_layers``: non-causal self-attention across the video's frame tokens."""

from __future__ import annotations

import pytest
import torch

from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.models.interfaces import CompressorInput


def _inputs(feats: torch.Tensor, valid: list[int]) -> CompressorInput:
    b, t = feats.shape[:2]
    mask = torch.arange(t)[None] < torch.tensor(valid)[:, None]  # (B, T)
    times = torch.arange(t).float()[None].expand(b, -1) + 0.5
    return CompressorInput(feats=feats, frame_mask=mask, timestamps=times, grid=(1, 1))


def test_early_tokens_read_later_frames_only_with_temporal_layers() -> None:
    torch.manual_seed(0)
    feats = torch.randn(1, 6, 1, 16)
    later = feats.clone()
    later[0, 5] = torch.randn(1, 16)  # change the last frame only
    for layers, reads_future in ((0, False), (1, True)):
        comp = SpatialPoolCompressor(16, stride=1, temporal_layers=layers).eval()
        a = comp(_inputs(feats, [6])).tokens
        b = comp(_inputs(later, [6])).tokens
        assert torch.allclose(a[0, 0], b[0, 0], atol=1e-6) != reads_future


def test_padded_frames_are_not_attended_and_gradients_reach_the_layers() -> None:
    torch.manual_seed(0)
    comp = SpatialPoolCompressor(16, stride=1, temporal_layers=2, temporal_heads=2)
    feats = torch.randn(2, 5, 1, 16)
    noisy = feats.clone()
    noisy[1, 3:] = torch.randn(2, 1, 16) * 10  # row 1 has 3 valid frames: change its padding
    out = comp(_inputs(feats, [5, 3]))
    again = comp(_inputs(noisy, [5, 3]))
    assert out.tokens.shape == (2, 5, 16) and out.mask.sum(1).tolist() == [5, 3]
    assert torch.allclose(out.tokens[1, :3], again.tokens[1, :3], atol=1e-5)
    out.tokens[out.mask].sum().backward()
    grads = [p.grad for p in comp.temporal.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="divisible by temporal_heads"):
        SpatialPoolCompressor(10, temporal_layers=1, temporal_heads=4)
