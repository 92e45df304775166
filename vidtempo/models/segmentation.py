"""Scene segmentation from per-frame features (TDC, arXiv 2504.10443; released code ``adapt_segment``).

Consecutive frames are compared by the cosine similarity of their *flattened* patch features
(``s_t = cos(f_t, f_{t+1})``, ``t = 0 .. T-2``). Scenes are cut at dissimilar points, then each scene is split
into chunks of at most ``chunk_size`` frames (the first frame of each chunk is TDC's static frame).

Two cut rules:

* ``"topk"`` (the released code, default): if ``T <= max_segments + 1`` every frame is its own scene;
  otherwise cut after the ``max_segments`` lowest-similarity points, giving up to ``max_segments + 1`` scenes.
* ``"threshold"`` (the paper's variant, commented out in the code): cut after every point with
  ``s_t < threshold``; when there are more than ``max_segments`` such points keep the lowest ones
  (``max_segments=None``: no cap).

:func:`frame_features_from_pixels` turns decoded frames into features without a neural encoder (downsampled,
ImageNet-normalised pixels), for tests and for TEMPO's clip detection.

Example:
    >>> import torch
    >>> feats = torch.cat([torch.ones(5, 4, 3), -torch.ones(7, 4, 3)])  # (T=12, P=4, D=3), one hard cut at 5
    >>> seg = SceneSegmenter(max_segments=1, chunk_size=4).segment(feats, timestamps=torch.arange(12) * 0.5)
    >>> seg.scene_starts, seg.chunks, seg.cut_times
    ([0, 5], [(0, 4), (4, 5), (5, 9), (9, 12)], [2.5])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MODES = ("topk", "threshold")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Segmentation:
    """Scenes and chunks of one video. Frame indices count valid frames from 0; ends are exclusive.

    Attributes:
        num_frames: number of valid (unpadded) frames.
        scene_starts: first frame of every scene, ascending, starting with 0 (empty for a 0-frame video).
        chunks: ``(start, end)`` frame ranges of at most ``chunk_size`` frames, in time order, never
            crossing a scene boundary; together they cover every valid frame once.
        cut_times: time in seconds of the first frame of every scene after the first (one per cut);
            None when no timestamps were given.
        similarities: (num_frames - 1,) float32 cosine similarity of each frame with the next.
        timestamps: (num_frames,) seconds of each frame, or None.
    """

    num_frames: int
    scene_starts: list[int]
    chunks: list[tuple[int, int]]
    cut_times: list[float] | None
    similarities: torch.Tensor
    timestamps: torch.Tensor | None = None

    @property
    def cuts(self) -> list[int]:
        """Frame index of the first frame after each cut (``scene_starts[1:]``)."""
        return self.scene_starts[1:]

    @property
    def scenes(self) -> list[tuple[int, int]]:
        """``(start, end)`` frame range of every scene."""
        ends = self.scene_starts[1:] + [self.num_frames]
        return list(zip(self.scene_starts, ends))

    @property
    def chunk_times(self) -> list[tuple[float, float]] | None:
        """``(first frame time, last frame time)`` in seconds of every chunk; None without timestamps."""
        if self.timestamps is None:
            return None
        ts = self.timestamps.tolist()
        return [(ts[s], ts[e - 1]) for s, e in self.chunks]


@dataclass
class ChunkMasks:
    """Scenes and chunks of a batch as masks (:meth:`SceneSegmenter.chunk_masks`). B videos, T frames.

    Attributes:
        lengths: (B,) valid frames per video (a right-padded prefix of each row).
        valid: (B, T) bool, the valid frames.
        scene_start: (B, T) bool, the first frame of every scene.
        chunk_start: (B, T) bool, the first frame of every chunk (every scene start is one).
        cut_mask: (B, T-1) bool, True = cut after frame t.
        similarities: (B, T-1) float32 cosine similarity of each frame with the next.
    """

    lengths: torch.Tensor
    valid: torch.Tensor
    scene_start: torch.Tensor
    chunk_start: torch.Tensor
    cut_mask: torch.Tensor
    similarities: torch.Tensor


def consecutive_similarity(flat: torch.Tensor, *, block: int = 64) -> torch.Tensor:
    """Cosine similarity of every frame with the next one.

    Computed over blocks of ``block`` frames (as the released code does, chunks of 64) so that only one block
    of elementwise products lives in memory: real DINOv2 features are 576 x 1536 per frame.

    Args:
        flat: (B, T, F) flattened per-frame features.
        block: frames per block.

    Returns:
        (B, T-1) float32 similarities.
    """
    num_pairs = flat.shape[1] - 1
    if num_pairs <= 0:
        return flat.new_zeros(flat.shape[0], 0, dtype=torch.float32)
    parts = []
    for start in range(0, num_pairs, block):  # a loop over blocks of frames; each block is one batched op
        end = min(start + block, num_pairs)
        a = flat[:, start:end].float()  # (B, n, F)
        b = flat[:, start + 1 : end + 1].float()  # (B, n, F)
        parts.append(F.cosine_similarity(a, b, dim=-1, eps=1e-8))  # (B, n)
    return torch.cat(parts, dim=1)


def _valid_lengths(
    frame_mask: torch.Tensor | None, batch: int, frames: int, device: torch.device
) -> torch.Tensor:
    """(B,) valid frame counts; the mask must mark a prefix of each row (right padding)."""
    if frame_mask is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    if frame_mask.shape != (batch, frames):
        raise ValueError(
            f"frame_mask must have shape (B, T) = {(batch, frames)}, got {tuple(frame_mask.shape)}"
        )
    mask = frame_mask.to(device=device, dtype=torch.bool)
    lengths = mask.sum(dim=1)  # (B,)
    prefix = torch.arange(frames, device=device)[None, :] < lengths[:, None]  # (B, T)
    if not torch.equal(prefix, mask):
        raise ValueError("frame_mask must be right-padded: True for the first n frames of a row, then False")
    return lengths


class SceneSegmenter:
    """Cut videos into scenes at low consecutive-frame similarity, then into chunks of <= ``chunk_size``.

    Args:
        max_segments: number of cut points (TDC's ``max_num_segments``, 24): up to ``max_segments + 1``
            scenes. In ``"threshold"`` mode a cap on the cuts (None = no cap).
        chunk_size: most frames per chunk inside a scene (TDC: 8).
        mode: ``"topk"`` (released code) or ``"threshold"`` (paper variant).
        threshold: similarity below which ``"threshold"`` mode cuts (TDC's ``dino_threshold``: 0.9).

    Example:
        >>> import torch
        >>> feats = torch.randn(2, 30, 4, 8)  # (B, T, P, D)
        >>> segs = SceneSegmenter(max_segments=3).segment(feats)
        >>> [len(s.scene_starts) for s in segs]
        [4, 4]
    """

    def __init__(
        self,
        max_segments: int | None = 24,
        chunk_size: int = 8,
        mode: str = "topk",
        threshold: float = 0.9,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"SceneSegmenter: unknown mode '{mode}'; valid modes: {', '.join(MODES)}")
        if max_segments is None and mode == "topk":
            raise ValueError("SceneSegmenter: mode 'topk' needs an integer max_segments (TDC uses 24)")
        if max_segments is not None and max_segments < 0:
            raise ValueError(f"SceneSegmenter: max_segments must be >= 0, got {max_segments}")
        if chunk_size < 1:
            raise ValueError(f"SceneSegmenter: chunk_size must be >= 1, got {chunk_size}")
        self.max_segments = max_segments
        self.chunk_size = chunk_size
        self.mode = mode
        self.threshold = threshold

    def __repr__(self) -> str:
        return (
            f"SceneSegmenter(max_segments={self.max_segments}, chunk_size={self.chunk_size}, "
            f"mode={self.mode!r}, threshold={self.threshold})"
        )

    def segment(
        self,
        feats: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> Segmentation | list[Segmentation]:
        """Segment one video (feats (T, P, D)) or a batch (feats (B, T, P, D)).

        Args:
            feats: per-frame patch features, (T, P, D) or (B, T, P, D); flattened per frame.
            timestamps: seconds of each frame, (T,) or (B, T); enables ``cut_times``.
            frame_mask: (B, T) bool, True for real frames (right padding only); batched input only.

        Returns:
            A :class:`Segmentation` for (T, P, D) input, a list of them (one per video) for a batch.
        """
        if feats.dim() == 3:
            if frame_mask is not None:
                raise ValueError(
                    "frame_mask is for batched (B, T, P, D) features; a single video has no padding"
                )
            ts = None if timestamps is None else timestamps[None]
            return self.segment_batch(feats[None], ts)[0]
        if feats.dim() != 4:
            raise ValueError(f"feats must be (T, P, D) or (B, T, P, D), got shape {tuple(feats.shape)}")
        return self.segment_batch(feats, timestamps, frame_mask)

    def segment_batch(
        self,
        feats: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> list[Segmentation]:
        """Batched: feats (B, T, P, D), timestamps (B, T), frame_mask (B, T) -> one result per video."""
        masks = self.chunk_masks(feats, timestamps, frame_mask)
        lengths = masks.lengths.tolist()
        return [self._one(b, lengths[b], masks.similarities[b], masks.cut_mask[b], timestamps)
                for b in range(feats.shape[0])]  # fmt: skip

    def chunk_masks(
        self,
        feats: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> ChunkMasks:
        """The whole batch's scenes and chunks as (B, T) masks, on the features' device, with no per-video
        loop and no host transfer (what ``tdc`` reads; :meth:`segment_batch` turns it into lists).

        Example:
            >>> feats = torch.cat([torch.ones(1, 5, 4, 3), -torch.ones(1, 7, 4, 3)], dim=1)  # (B=1, T=12, P, D)
            >>> m = SceneSegmenter(max_segments=1, chunk_size=4).chunk_masks(feats)
            >>> m.chunk_start[0].nonzero().flatten().tolist()  # chunks (0, 4), (4, 5), (5, 9), (9, 12)
            [0, 4, 5, 9]
        """
        if feats.dim() != 4:
            raise ValueError(f"feats must be (B, T, P, D), got shape {tuple(feats.shape)}")
        batch, frames = feats.shape[:2]
        if timestamps is not None and timestamps.shape != (batch, frames):
            raise ValueError(
                f"timestamps must have shape (B, T) = {(batch, frames)}, got {tuple(timestamps.shape)}"
            )
        lengths = _valid_lengths(frame_mask, batch, frames, feats.device)  # (B,)
        sims = consecutive_similarity(feats.reshape(batch, frames, -1))  # (B, T-1)
        pair_valid = torch.arange(frames - 1, device=feats.device)[None, :] < (
            lengths[:, None] - 1
        )  # (B, T-1)
        cut_mask = self._cut_mask(sims, pair_valid, lengths)  # (B, T-1): True = cut after frame t
        index = torch.arange(frames, device=feats.device)[None, :]  # (1, T)
        valid = index < lengths[:, None]  # (B, T)
        scene_start = valid & torch.cat([torch.ones_like(valid[:, :1]), cut_mask], dim=1)  # (B, T)
        last_start = torch.where(scene_start, index, torch.zeros_like(index)).cummax(dim=1).values  # (B, T)
        chunk_start = valid & ((index - last_start) % self.chunk_size == 0)
        return ChunkMasks(lengths, valid, scene_start, chunk_start, cut_mask, sims)

    def _cut_mask(self, sims: torch.Tensor, pair_valid: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Vectorised cut selection. sims, pair_valid (B, T-1); lengths (B,) -> (B, T-1) bool cut mask."""
        inf = torch.tensor(float("inf"), device=sims.device)
        if self.mode == "topk":
            assert self.max_segments is not None
            every_frame = lengths <= self.max_segments + 1  # (B,): code rule, each frame is its own scene
            candidates = pair_valid
        else:
            every_frame = torch.zeros_like(lengths, dtype=torch.bool)
            candidates = pair_valid & (sims < self.threshold)
        cut = candidates & every_frame[:, None]
        keep = self.max_segments if self.max_segments is not None else sims.shape[1]
        k = min(keep, sims.shape[1])
        if k > 0:
            scores = torch.where(candidates, sims, inf)  # (B, T-1): non-candidates never win
            lowest = scores.topk(k, dim=1, largest=False).indices  # (B, k)
            chosen = torch.zeros_like(candidates).scatter_(1, lowest, True) & candidates
            cut = cut | (chosen & ~every_frame[:, None])
        return cut

    def _one(
        self,
        b: int,
        length: int,
        sims: torch.Tensor,
        cut_mask: torch.Tensor,
        timestamps: torch.Tensor | None,
    ) -> Segmentation:
        """Build the result of video ``b`` from its cut mask (T-1,)."""
        cut_after = torch.nonzero(cut_mask[: max(length - 1, 0)]).flatten()  # ascending
        starts = ([0] if length > 0 else []) + (cut_after + 1).tolist()
        ends = starts[1:] + [length]
        chunks = [
            (c, min(c + self.chunk_size, e))
            for s, e in zip(starts, ends)
            for c in range(s, e, self.chunk_size)
        ]
        ts = None if timestamps is None else timestamps[b, :length].detach().float().cpu()
        cut_times = None if ts is None else [float(ts[i]) for i in starts[1:]]
        return Segmentation(
            num_frames=length,
            scene_starts=starts,
            chunks=chunks,
            cut_times=cut_times,
            similarities=sims[: max(length - 1, 0)].detach().cpu(),
            timestamps=ts,
        )


def frame_features_from_pixels(frames: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Encoder-free frame features: area-downsampled, ImageNet-normalised pixels.

    Args:
        frames: (T, H, W, 3) uint8 RGB frames (numpy arrays are accepted).
        size: output grid side; each frame becomes ``size * size`` "patches" of 3 channels.

    Returns:
        (T, size * size, 3) float32 features, ready for :meth:`SceneSegmenter.segment`.

    Example:
        >>> import torch
        >>> frame_features_from_pixels(torch.zeros(2, 48, 64, 3, dtype=torch.uint8), size=8).shape
        torch.Size([2, 64, 3])
    """
    frames = torch.as_tensor(frames)
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(
            f"frames must be uint8 (T, H, W, 3) RGB, got dtype {frames.dtype} and shape {tuple(frames.shape)}"
        )
    pixels = frames.permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W) in [0, 1]
    pixels = F.adaptive_avg_pool2d(pixels, (size, size))  # (T, 3, size, size)
    mean = pixels.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = pixels.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (pixels - mean) / std
    return pixels.flatten(2).transpose(1, 2).contiguous()  # (T, size*size, 3)
