"""Temporally rich video selection for TEMPO / TEMPLE preference data (``docs/methods/prefgen.md``).

The released TEMPLE pipeline (TEMPLE, arXiv 2503.16929; lscpku/TEMPLE ``preprocess.py``):

1. shot detection (TEMPLE: TransNetV2; here our :class:`~vidtempo.models.segmentation.SceneSegmenter` in
   ``threshold`` mode on :func:`~vidtempo.models.segmentation.frame_features_from_pixels`), shots shorter
   than 8 frames dropped;
2. clip filter: drop shots shorter than ``0.2 * fps`` frames and blank ones (grey ``max - min < 10``);
3. video filter A: ``4 <= #clips <= 32`` and no clip longer than 16 s;
4. clip similarity: cosine of one (middle) frame per clip (TEMPLE: SigLIP embeddings; here pixel features or
   the checkpoint's own vision encoder);
5. grouping: greedy average-linkage merging of the most similar pair while its similarity is ``> 0.8``;
   consecutive clips of one group form one *merged segment*;
6. video filter B (repetition): at least 4 merged segments, and no group appearing as ``>= 4`` merged
   segments or in more than ``n_segments // 3`` of them.

Every rejection is recorded with its reason (``Selection.reason``).

Example:
    >>> import numpy as np
    >>> sim = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]])
    >>> merge_groups(sim, 0.8)
    [[0, 1], [2]]
    >>> merged_segments([[0, 2], [1], [3, 4]], 5)  # clips 3 and 4 are adjacent: one merged segment
    [(0, [0]), (1, [1]), (0, [2]), (2, [3, 4])]
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidtempo.models.interfaces import VideoModel

log = logging.getLogger(__name__)

GROUP_FEATURES = ("pixels", "encoder")
# (N, H, W, 3) uint8 frames -> (N, F) clip embeddings
Embedder = Callable[[np.ndarray], Any]


@dataclass
class SelectSettings:
    """Selection settings (recipe ``prefgen:`` keys; defaults = TEMPLE's released values, ``preprocess.py``).

    Attributes:
        shot_threshold: cut after frame t when the cosine similarity of frames t and t+1 (pixel features)
            is below this. Pixel features are not TransNetV2: calibrated on hard cuts of synthetic video.
        feature_size: side of the pooled pixel grid of :func:`frame_features_from_pixels`.
        detect_size: short side (pixels) frames are decoded at for detection.
        max_detect_frames: cap on decoded frames (longer videos are sampled below their native rate).
        min_shot_frames: shots shorter than this are dropped (TransNetV2 post-processing: 8).
        min_clip_fps_fraction: clips shorter than ``this * fps`` frames are dropped (0.2).
        blank_range: clips whose grey ``max - min`` over all their frames is below this are dropped (10).
        min_clips, max_clips: clip-count filter (4, 32).
        max_clip_seconds: no clip may be longer (16 s).
        group_features: ``pixels`` (flattened pooled pixels) or ``encoder`` (the checkpoint's vision
            encoder, patch-mean); TEMPLE used SigLIP-so400m image embeddings.
        group_threshold: merge while the best average similarity is above this (0.8).
        min_segments: at least this many merged segments (4).
        max_group_repeats: reject when a group appears as this many merged segments or more (4).
        repeat_divisor: reject when a group appears in more than ``n_segments // repeat_divisor`` (3).
        backend: video decoder.
    """

    shot_threshold: float = 0.5
    feature_size: int = 32
    detect_size: int = 64
    max_detect_frames: int = 20000
    min_shot_frames: int = 8
    min_clip_fps_fraction: float = 0.2
    blank_range: float = 10.0
    min_clips: int = 4
    max_clips: int = 32
    max_clip_seconds: float = 16.0
    group_features: str = "pixels"
    group_threshold: float = 0.8
    min_segments: int = 4
    max_group_repeats: int = 4
    repeat_divisor: int = 3
    backend: str = "pyav"

    def check(self, where: str = "prefgen") -> None:
        """Raise ``ValueError`` naming the key when a value is out of range."""
        if self.group_features not in GROUP_FEATURES:
            raise ValueError(
                f"{where}.group_features: expected one of {GROUP_FEATURES}, got {self.group_features!r}"
            )
        for key in ("feature_size", "detect_size", "max_detect_frames", "min_clips", "max_clips",
                    "min_segments", "max_group_repeats", "repeat_divisor"):  # fmt: skip
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{where}.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        if self.min_clips > self.max_clips:
            raise ValueError(
                f"{where}.min_clips ({self.min_clips}) is larger than max_clips ({self.max_clips})"
            )
        if self.max_clip_seconds <= 0:
            raise ValueError(f"{where}.max_clip_seconds: expected > 0, got {self.max_clip_seconds}")


@dataclass
class Selection:
    """The selection result of one video. Frame indices count decoded frames (``fps`` of them per second).

    Attributes:
        video, video_id: file and identifier.
        fps, num_frames, duration: decoded frame rate, frame count and seconds.
        shots: ``(start, end)`` frame ranges from shot detection (end exclusive).
        clips: the shots left after the short / blank filters.
        dropped: ``(shot index, reason)`` of the shots the clip filter removed.
        similarity: (N, N) clip similarity (N = len(clips)).
        groups: clip indices of each similarity group (numbered by first clip).
        segments: ``(group, [clip indices])`` of each merged segment, in time order.
        keep: the video passed every filter.
        reason: why it was rejected (None when kept).
    """

    video: str
    video_id: str
    fps: float = 0.0
    num_frames: int = 0
    duration: float = 0.0
    shots: list[tuple[int, int]] = field(default_factory=list)
    clips: list[tuple[int, int]] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)
    similarity: list[list[float]] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    segments: list[tuple[int, list[int]]] = field(default_factory=list)
    keep: bool = False
    reason: str | None = None

    def segment_frames(self) -> list[tuple[int, int]]:
        """``(start, end)`` frames of each merged segment: first clip's start to last clip's end."""
        return [(self.clips[members[0]][0], self.clips[members[-1]][1]) for _, members in self.segments]

    def segment_times(self) -> list[tuple[float, float]]:
        """``(start, end)`` seconds of each merged segment (the captioning units)."""
        return [(s / self.fps, e / self.fps) for s, e in self.segment_frames()]

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (the similarity matrix rounded to 4 decimals)."""
        rec = asdict(self)
        rec["similarity"] = [[round(float(x), 4) for x in row] for row in self.similarity]
        rec["segment_times"] = (
            [[round(s, 3), round(e, 3)] for s, e in self.segment_times()] if self.keep else []
        )
        return rec


# ------------------------------------------------------------------------------------------ shots and clips
def detect_shots(frames: np.ndarray, settings: SelectSettings) -> list[tuple[int, int]]:
    """Shots of (T, H, W, 3) uint8 frames: low consecutive pixel-feature similarity = cut.

    Returns ``(start, end)`` frame ranges (end exclusive) of at least ``min_shot_frames`` frames.
    """
    import torch

    from vidtempo.models.segmentation import SceneSegmenter, frame_features_from_pixels

    feats = frame_features_from_pixels(torch.as_tensor(frames), size=settings.feature_size)  # (T, P, 3)
    seg = SceneSegmenter(max_segments=None, mode="threshold", threshold=settings.shot_threshold).segment(
        feats
    )
    return [(s, e) for s, e in seg.scenes if e - s >= settings.min_shot_frames]


def grey(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, H, W) float32 luma (ITU-R BT.601 weights, as OpenCV's BGR2GRAY)."""
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def filter_clips(
    frames: np.ndarray, shots: list[tuple[int, int]], fps: float, settings: SelectSettings
) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
    """Drop short (``< min_clip_fps_fraction * fps`` frames) and blank (grey range < ``blank_range``) shots.

    Returns (kept clips, [(shot index, reason)] of the dropped ones).
    """
    kept, dropped = [], []
    for i, (s, e) in enumerate(shots):
        if e - s < settings.min_clip_fps_fraction * fps:
            dropped.append((i, f"short: {e - s} frames < {settings.min_clip_fps_fraction} * {fps:g} fps"))
            continue
        g = grey(frames[s:e])  # (n, H, W)
        if float(g.max() - g.min()) < settings.blank_range:
            dropped.append(
                (i, f"blank: grey range {float(g.max() - g.min()):.1f} < {settings.blank_range:g}")
            )
            continue
        kept.append((s, e))
    return kept, dropped


def check_clips(clips: list[tuple[int, int]], fps: float, settings: SelectSettings) -> str | None:
    """Video filter A: the reason the clip list fails, or None."""
    if len(clips) < settings.min_clips:
        return f"too few clips: {len(clips)} < {settings.min_clips}"
    if len(clips) > settings.max_clips:
        return f"too many clips: {len(clips)} > {settings.max_clips}"
    for i, (s, e) in enumerate(clips):
        if e - s > settings.max_clip_seconds * fps:
            return f"clip too long: clip {i} lasts {(e - s) / fps:.2f} s > {settings.max_clip_seconds:g} s"
    return None


# ------------------------------------------------------------------------------------ similarity grouping
def cosine_matrix(embeds: Any) -> np.ndarray:
    """(N, F) embeddings -> (N, N) float64 cosine similarities."""
    x = np.asarray(embeds, dtype=np.float64).reshape(len(embeds), -1)  # (N, F)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def merge_groups(similarity: np.ndarray, threshold: float) -> list[list[int]]:
    """Greedy average-linkage grouping (TEMPLE ``tools/similarity.py`` ``merge_items``, reimplemented).

    Repeatedly merge the two current groups with the highest similarity while it is ``> threshold``; the
    merged group's similarity to every other group is the mean of its two parents' rows. Ties go to the
    lowest later index, then the highest earlier index (the released scan order).

    Args:
        similarity: (N, N) symmetric similarity matrix.
        threshold: merge only above this.

    Returns:
        Groups of clip indices, each sorted, ordered by their first clip.
    """
    sim = np.array(similarity, dtype=np.float64)
    groups: list[list[int]] = [[i] for i in range(len(sim))]
    while len(groups) > 1:
        lower = np.where(np.tri(len(sim), k=-1, dtype=bool), sim, -np.inf)  # (G, G): pairs i > j only
        best = lower.max()
        if best <= threshold:
            break
        hits = np.argwhere(lower == best)
        i = int(hits[:, 0].min())
        j = int(hits[hits[:, 0] == i, 1].max())
        merged_row = np.delete((sim[i] + sim[j]) / 2, [i, j])  # (G-2,)
        sim = np.delete(np.delete(sim, [i, j], axis=0), [i, j], axis=1)  # (G-2, G-2)
        sim = np.block([[sim, merged_row[:, None]], [merged_row[None, :], np.zeros((1, 1))]])  # (G-1, G-1)
        groups = [g for k, g in enumerate(groups) if k not in (i, j)] + [sorted(groups[i] + groups[j])]
    return sorted(groups, key=lambda g: g[0])


def merged_segments(groups: list[list[int]], num_clips: int) -> list[tuple[int, list[int]]]:
    """Runs of consecutive clips in one group -> ``(group index, [clip indices])`` in time order."""
    clip_group = {c: g for g, members in enumerate(groups) for c in members}
    if sorted(clip_group) != list(range(num_clips)):
        raise ValueError(f"groups {groups} do not cover clips 0..{num_clips - 1} exactly once")
    segments: list[tuple[int, list[int]]] = []
    for c in range(num_clips):
        if segments and segments[-1][0] == clip_group[c]:
            segments[-1][1].append(c)
        else:
            segments.append((clip_group[c], [c]))
    return segments


def check_repetition(segments: list[tuple[int, list[int]]], settings: SelectSettings) -> str | None:
    """Video filter B: the reason a merged-segment list is too short or repetitive, or None."""
    n = len(segments)
    if n < settings.min_segments:
        return f"too few merged segments: {n} < {settings.min_segments}"
    counts = Counter(g for g, _ in segments)
    group, times = counts.most_common(1)[0]
    if times >= settings.max_group_repeats or times > n // settings.repeat_divisor:
        limit = f"limit: < {settings.max_group_repeats} and <= {n} // {settings.repeat_divisor}"
        return f"repetitive: group {group} recurs in {times} of {n} merged segments ({limit})"
    return None


def pixel_embedder(settings: SelectSettings) -> Embedder:
    """Clip embeddings from pooled pixels: (N, H, W, 3) uint8 -> (N, feature_size**2 * 3)."""

    def embed(frames: np.ndarray) -> Any:
        import torch

        from vidtempo.models.segmentation import frame_features_from_pixels

        return frame_features_from_pixels(torch.as_tensor(frames), size=settings.feature_size).flatten(1)

    return embed


def encoder_embedder(model: VideoModel, batch_size: int = 32) -> Embedder:
    """Clip embeddings from the checkpoint's vision side: (N, H, W, 3) uint8 -> (N, D), through the model's
    ``embed_frames`` (capability ``embed_frames``: a composed VideoLLM's patch-mean of its encoder features, the
    native Qwen2.5-VL's merged tokens of the frame as a one-frame video)."""
    if "embed_frames" not in getattr(model, "capabilities", ()):
        raise ValueError(f"{type(model).__name__} has no capability 'embed_frames' (per-frame embeddings)")

    def embed(frames: np.ndarray) -> Any:
        import torch

        device = next(model.parameters()).device
        pixels = torch.as_tensor(frames).permute(0, 3, 1, 2).float().div(255.0)  # (N, 3, H, W)
        with torch.no_grad():
            out = [model.embed_frames(pixels[i : i + batch_size].to(device)).float().cpu()
                   for i in range(0, len(pixels), batch_size)]  # fmt: skip
        return torch.cat(out)  # (N, D)

    return embed


# ---------------------------------------------------------------------------------------------- one video
def select_frames(
    frames: np.ndarray,
    fps: float,
    settings: SelectSettings,
    embed: Embedder | None = None,
    video: str = "<frames>",
    video_id: str = "",
    middle_frames: Callable[[list[int]], np.ndarray] | None = None,
) -> Selection:
    """Run every selection step on decoded (T, H, W, 3) uint8 frames at ``fps``.

    Args:
        frames: the decoded frames.
        fps: their rate.
        settings: thresholds.
        embed: clip embedder for grouping (default: pooled pixels).
        video, video_id: recorded in the result.
        middle_frames: frame indices -> (N, H', W', 3) frames given to ``embed`` (default: from ``frames``;
            :func:`select_video` re-decodes them at native size for an encoder).
    """
    sel = Selection(video=video, video_id=video_id, fps=float(fps), num_frames=len(frames),
                    duration=len(frames) / fps)  # fmt: skip
    sel.shots = detect_shots(frames, settings)
    sel.clips, sel.dropped = filter_clips(frames, sel.shots, fps, settings)
    sel.reason = check_clips(sel.clips, fps, settings)
    if sel.reason:
        return sel
    mid_idx = [s + (e - s) // 2 for s, e in sel.clips]  # one (middle) frame per clip
    mids = middle_frames(mid_idx) if middle_frames is not None else frames[mid_idx]  # (N, H, W, 3)
    sim = cosine_matrix((embed or pixel_embedder(settings))(mids))  # (N, N)
    sel.similarity = sim.tolist()
    sel.groups = merge_groups(sim, settings.group_threshold)
    sel.segments = merged_segments(sel.groups, len(sel.clips))
    sel.reason = check_repetition(sel.segments, settings)
    sel.keep = sel.reason is None
    return sel


def select_video(
    path: str | Path, settings: SelectSettings, embed: Embedder | None = None, video_id: str | None = None
) -> Selection:
    """Decode ``path`` at ``detect_size`` and select it (see :func:`select_frames`).

    With an ``embed`` function (``group_features: encoder``) each clip's middle frame is decoded again at
    native size for it.

    Raises:
        VideoDecodeError: the video cannot be decoded.
    """
    from vidtempo.data.video import load_clip, open_video

    clip = load_clip(path, max_frames=settings.max_detect_frames, size=settings.detect_size,
                     backend=settings.backend)  # fmt: skip
    native = clip.indices.numpy()  # (T,) native frame index of every decoded frame

    def middle_frames(idx: list[int]) -> np.ndarray:
        with open_video(path, settings.backend) as decoder:
            return decoder.get_frames(native[idx], None)[0]  # (N, H, W, 3)

    vid = video_id or Path(path).stem
    mids = middle_frames if embed is not None else None
    return select_frames(clip.frames.numpy(), clip.fps, settings, embed, str(path), vid, mids)


__all__ = [
    "GROUP_FEATURES", "SelectSettings", "Selection", "check_clips", "check_repetition", "cosine_matrix",
    "detect_shots", "encoder_embedder", "filter_clips", "merge_groups", "merged_segments", "pixel_embedder",
    "select_frames", "select_video",
]  # fmt: skip
