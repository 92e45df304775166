"""LLaVA-style baseline: average-pool each frame's patch grid, optionally add a time embedding.

Example:
    >>> import torch
    >>> from vidtempo.models.interfaces import CompressorInput
    >>> comp = SpatialPoolCompressor(in_dim=8, stride=2)
    >>> out = comp(CompressorInput(feats=torch.randn(1, 3, 16, 8), frame_mask=torch.ones(1, 3, dtype=torch.bool),
    ...                            timestamps=torch.tensor([[0.5, 1.5, 2.5]]), grid=(4, 4)))
    >>> out.tokens.shape  # 3 frames x (2 x 2) pooled tokens
    torch.Size([1, 12, 8])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vidtempo.models.compressors.audio_windows import pool_audio_batch
from vidtempo.models.interfaces import CompressorInput, TokenCompressor, VideoTokens
from vidtempo.models.time_embedding import sinusoidal_time_embedding


class SpatialPoolCompressor(TokenCompressor):
    """Average-pool each frame's (h, w) patch grid by ``stride``; concatenate frames in time order.

    Args:
        in_dim: encoder feature width D (output width is the same).
        stride: pooling window and stride over the patch grid (1 = keep every patch).
        time_embedding: add a learnable-scaled sinusoidal embedding of each frame's timestamp (seconds).
        frame_separator: append one learned separator token after every frame.
        norm: LayerNorm the pooled features first, so visual content and the (unit-amplitude) time embedding
            have comparable scales whatever the encoder's output scale is (a tiny CNN's features are ~0.1,
            and without the norm the time signal drowned the content in our TempoSynth runs).
        audio_dim: width of the audio encoder's features; each frame's token(s) then get its audio added:
            the audio from the frame's time to the next frame's window (``pool_audio_per_frame``), averaged,
            LayerNormed and projected to ``in_dim``. None = the compressor takes no audio (and refuses it).
        audio_window: window of ``pool_audio_per_frame`` in seconds (smaller than the frame spacing: each frame
            then hears from its own time up to the next frame).
        temporal_layers: pre-LN transformer layers of self-attention across all the video's tokens (not
            causal), after the time embedding and the audio: every frame's token can read later frames
            before the LLM's causal attention does (the DaMO paper's temporal self-attention within a
            stream; ``docs/components/compressors.md``). 0 = off.
        temporal_heads: attention heads of those layers (``in_dim`` must be divisible by it).
    """

    def __init__(
        self, in_dim: int, stride: int = 2, time_embedding: bool = True, frame_separator: bool = False,
        norm: bool = True, audio_dim: int | None = None, audio_window: float = 0.25, temporal_layers: int = 0,
        temporal_heads: int = 4,
    ) -> None:  # fmt: skip
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.in_dim = self.out_dim = in_dim
        self.stride = stride
        self.time_embedding = time_embedding
        self.time_scale = nn.Parameter(torch.ones(1)) if time_embedding else None  # 1-D: FSDP2 shards no scalars
        self.separator = nn.Parameter(torch.randn(in_dim) * 0.02) if frame_separator else None
        self.norm = nn.LayerNorm(in_dim) if norm else None
        self.audio_dim, self.audio_window = audio_dim, float(audio_window)
        self.audio_proj = (
            nn.Sequential(nn.LayerNorm(audio_dim), nn.Linear(audio_dim, in_dim)) if audio_dim is not None else None
        )
        self.temporal = temporal_mixer(in_dim, temporal_layers, temporal_heads)

    def tokens_per_frame(self, grid: tuple[int, int]) -> int:
        h, w = grid
        return math.ceil(h / self.stride) * math.ceil(w / self.stride) + (self.separator is not None)

    def num_tokens(self, num_frames: int, grid: tuple[int, int], audio: bool = False) -> int:
        return num_frames * self.tokens_per_frame(grid)

    def forward(self, inputs: CompressorInput) -> VideoTokens:
        feats = inputs.feats  # (B, T, P, D)
        b, t, p, d = feats.shape
        h, w = inputs.grid
        if h * w != p:
            raise ValueError(f"grid {inputs.grid} does not match {p} patches per frame")
        x = feats.reshape(b * t, h, w, d).permute(0, 3, 1, 2)  # (B*T, D, h, w)
        x = nn.functional.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        x = x.flatten(2).transpose(1, 2).reshape(b, t, -1, d)  # (B, T, n, D)
        if self.norm is not None:
            x = self.norm(x)
        if inputs.audio is not None:
            x = x + self._frame_audio(inputs).unsqueeze(2)  # (B, T, 1, D) onto every token of the frame
        if self.time_scale is not None:
            x = x + self.time_scale * sinusoidal_time_embedding(inputs.timestamps, d).to(x.dtype).unsqueeze(2)
        if self.temporal is not None:
            pad = ~inputs.frame_mask.repeat_interleave(x.shape[2], dim=1)  # (B, T*n) True = padding
            x = self.temporal(x.reshape(b, -1, d), src_key_padding_mask=pad).reshape(x.shape)
        if self.separator is not None:
            x = torch.cat([x, self.separator.to(x.dtype).expand(b, t, 1, d)], dim=2)
        n = x.shape[2]
        tokens = x.reshape(b, t * n, d)  # (B, T*n, D), padded frames are dropped by the mask
        mask = inputs.frame_mask.repeat_interleave(n, dim=1)  # (B, T*n)
        return pack_valid(tokens, mask)

    def _frame_audio(self, inputs: CompressorInput) -> torch.Tensor:
        """(B, T, D): each valid frame's audio window, pooled and projected; zeros for padded frames."""
        if self.audio_proj is None:
            raise ValueError("SpatialPoolCompressor got audio features but has no audio_dim: set "
                             "model.compressor.audio_dim to the audio encoder's out_dim")  # fmt: skip
        audio = inputs.audio
        assert audio is not None
        if audio.feats.shape[-1] != self.audio_dim:
            raise ValueError(f"SpatialPoolCompressor: audio_dim={self.audio_dim} but the audio features are "
                             f"{audio.feats.shape[-1]}-d")  # fmt: skip
        out = pool_audio_batch(audio.feats, audio.times, audio.mask, inputs.timestamps, inputs.frame_mask, 1,
                               self.audio_window)[:, :, 0]  # (B, T, Da), zeros at padded frames  # fmt: skip
        return self.audio_proj(out)  # (B, T, D)


def temporal_mixer(dim: int, layers: int, heads: int) -> nn.TransformerEncoder | None:
    """``layers`` pre-LN self-attention layers over a (B, N, dim) token sequence (MLP 2x, no dropout); None at 0."""
    if layers < 0 or (layers and dim % heads):
        raise ValueError(f"temporal_layers must be >= 0 and in_dim ({dim}) divisible by temporal_heads ({heads})")
    if not layers:
        return None
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)  # fmt: skip
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def pack_valid(tokens: torch.Tensor, mask: torch.Tensor) -> VideoTokens:
    """Move each row's valid tokens to the front and trim to the longest row: (B, N, D) -> (B, N', D)."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # valid first, order kept
    tokens = torch.gather(tokens, 1, order.unsqueeze(-1).expand_as(tokens))
    mask = torch.gather(mask, 1, order)
    keep = int(mask.sum(1).max().item()) if mask.numel() else 0
    return VideoTokens(tokens=tokens[:, :keep], mask=mask[:, :keep])
