"""Contracts that every pluggable model component satisfies (subclass these in research code).

Dimension letters used in shape comments across vidtempo:
    B batch, T frames, P patches per frame, D feature width, N video tokens, L text tokens,
    S audio samples, A audio feature steps, H LLM hidden size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AudioFeatures:
    """Audio encoder output.

    Attributes:
        feats: (B, A, D) features.
        times: (B, A) centre time of each step in seconds (relative to the clip start).
        mask: (B, A) bool, True = valid step (False for padding or a video with no audio track).
    """

    feats: torch.Tensor
    times: torch.Tensor
    mask: torch.Tensor


@dataclass
class CompressorInput:
    """Everything a compressor may use to turn per-frame features into video tokens.

    Attributes:
        feats: (B, T, P, D) per-frame patch features from the vision encoder.
        frame_mask: (B, T) bool, True = real frame (False = padding).
        timestamps: (B, T) presentation time of each frame in seconds.
        grid: (h, w) patch grid of one frame, ``h * w == P``.
        audio: optional audio features of the same videos.
        query: optional text query per video (e.g. the first user turn), for query-aware compressors.
    """

    feats: torch.Tensor
    frame_mask: torch.Tensor
    timestamps: torch.Tensor
    grid: tuple[int, int]
    audio: AudioFeatures | None = None
    query: list[str] | None = None


@dataclass
class VideoTokens:
    """Variable-length video token sequences, right-padded to the longest in the batch.

    Attributes:
        tokens: (B, N, D_out) tokens.
        mask: (B, N) bool, True = valid token.
        info: optional per-call diagnostics (e.g. tokens trimmed by a budget guard).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    info: dict | None = None


class VisionEncoder(nn.Module, ABC):
    """Per-frame image encoder. Owns its own resizing and normalisation.

    Subclasses set ``out_dim`` (feature width D) and ``image_size`` and implement :meth:`encode`.
    """

    out_dim: int
    image_size: int

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixels: (N, 3, H, W) float in [0, 1] -> ((N, P, D) patch features, (h, w) patch grid)."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.encode(pixels)

    def preprocess(self, pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        """Resize (N, 3, H, W) in [0, 1] to ``image_size`` and normalise with ``mean``/``std``."""
        size = self.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        mean_t = pixels.new_tensor(mean).view(1, 3, 1, 1)
        std_t = pixels.new_tensor(std).view(1, 3, 1, 1)
        return (pixels - mean_t) / std_t


class AudioEncoder(nn.Module, ABC):
    """Waveform encoder. Owns its own feature extraction (e.g. log-mel)."""

    out_dim: int
    sample_rate: int = 16000

    @abstractmethod
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> AudioFeatures:
        """waveform: (B, S) float mono at ``sample_rate``; lengths: (B,) valid samples per row."""


class TokenCompressor(nn.Module, ABC):
    """Turns per-frame features (+ time, + audio, + text query) into a video token sequence.

    Subclasses set ``out_dim`` (the width of the tokens they emit).
    """

    out_dim: int

    @abstractmethod
    def forward(self, inputs: CompressorInput) -> VideoTokens:
        """Compress ``inputs.feats`` (B, T, P, D) to (B, N, out_dim) tokens."""

    def num_tokens(self, num_frames: int, grid: tuple[int, int], audio: bool = False) -> int:
        """Tokens emitted for one video of ``num_frames`` frames (upper bound when data-dependent)."""
        raise NotImplementedError(f"{type(self).__name__} does not report a token count")
