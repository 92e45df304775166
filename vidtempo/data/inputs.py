"""``VideoInputs``: everything a video model reads besides the text, as one object.

The collators build it (``VideoTextBatch.video_inputs()``) and every model entry point takes it
(``VideoModel.forward(input_ids, attention_mask, labels, video)``, ``generate``, ``encode_video``): a new
input is one field here, not a new argument in six signatures.

Example:
    >>> import torch
    >>> v = VideoInputs(frames=torch.rand(2, 4, 3, 32, 32))
    >>> v.rows, v.num_frames, v.mask().shape, v.times()[0].tolist()
    (2, 4, torch.Size([2, 4]), [0.0, 1.0, 2.0, 3.0])
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


def unit_pixels(frames: torch.Tensor) -> torch.Tensor:
    """Frames as fp32 in [0, 1]: uint8 (0-255, what the collators hand over) is divided by 255 in fp32 on the
    tensor's own device; a floating tensor is returned as it is.

    Frames travel as uint8 (a quarter of the host-to-device bytes of fp32, never cast by a ``bf16-true``
    precision plugin) and are normalised here, inside each encoder's forward.

    Example:
        >>> unit_pixels(torch.tensor([0, 51, 255], dtype=torch.uint8)).tolist()
        [0.0, 0.20000000298023224, 1.0]
    """
    if frames.dtype == torch.uint8:
        return frames.float().div_(255.0)
    if not frames.is_floating_point():
        raise ValueError(f"frames must be uint8 (0-255) or float in [0, 1], got dtype {frames.dtype}")
    return frames


@dataclass
class VideoInputs:
    """The video side of a batch. B rows (samples), U distinct clips (U = B without ``clip_index``), T frames.

    Attributes:
        frames: (U, T, 3, H, W) uint8 0-255 (the collators' output; normalised on the device by the encoders,
            :func:`unit_pixels`) or float in [0, 1]; padded frames are zeros. None when ``features`` are given
            instead.
        frame_mask: (B, T) bool, True = real frame. None = every frame is real.
        timestamps: (B, T) float32 seconds of each frame. None = 0, 1, 2, ...
        features: (U, T, P, D) cached encoder features (then ``frames`` is None) and their patch ``grid``.
        grid: (h, w) patch grid of ``features``.
        audio: (U, S) float mono waveform or (U, n_mels, F) log-mel; None without audio.
        audio_lengths: (U,) valid audio samples per clip (0 = no audio track).
        queries: one text query per row (e.g. the first user turn), for query-aware compressors.
        clip_index: (B,) long, row b's clip among the U clips; None = one clip per row.
    """

    frames: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None
    timestamps: torch.Tensor | None = None
    features: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    audio: torch.Tensor | None = None
    audio_lengths: torch.Tensor | None = None
    queries: list[str] | None = None
    clip_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.frames is None and self.features is None:
            raise ValueError("VideoInputs needs frames (U, T, 3, H, W) or cached features (U, T, P, D)")
        if self.features is not None and self.grid is None:
            raise ValueError("cached features need their patch grid (VideoInputs.grid)")

    @property
    def source(self) -> torch.Tensor:
        """The per-clip tensor the model encodes: ``features`` when cached, else ``frames``."""
        return self.features if self.features is not None else self.frames  # type: ignore[return-value]

    @property
    def rows(self) -> int:
        """B: one per sample (``len(clip_index)`` when clips are shared)."""
        return len(self.clip_index) if self.clip_index is not None else int(self.source.shape[0])

    @property
    def num_frames(self) -> int:
        """T: frames per row, padding included."""
        return int(self.source.shape[1])

    def mask(self) -> torch.Tensor:
        """(B, T) frame mask; all True when none was given."""
        if self.frame_mask is not None:
            return self.frame_mask
        return torch.ones(self.rows, self.num_frames, dtype=torch.bool, device=self.source.device)

    def times(self) -> torch.Tensor:
        """(B, T) timestamps; 0, 1, 2, ... seconds when none were given."""
        if self.timestamps is not None:
            return self.timestamps
        steps = torch.arange(self.num_frames, device=self.source.device).float()
        return steps.expand(self.rows, self.num_frames)

    def to(self, device: torch.device | str) -> VideoInputs:
        """A copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in moved.items() if isinstance(v, torch.Tensor)})
