"""Frame samplers: decide which frames to take *before* anything is decoded.

A sampler maps a video's timeline (native fps, frame count, optional ``[start, end)`` span) to a
:class:`SamplePlan`: target times, the frame index displayed at each target time, and the effective
frame rate of the sampled frames. Both samplers place frames at the midpoints of equal segments of the
span, so a span of ``D`` seconds sampled with ``n`` frames has effective fps ``n / D`` exactly.

Example:
    >>> plan = UniformSampler(4)(duration=4.0, native_fps=8.0)
    >>> plan.times.tolist(), plan.indices.tolist(), plan.fps
    ([0.5, 1.5, 2.5, 3.5], [4, 12, 20, 28], 1.0)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

_EPS = 1e-6  # guards floor() against float error when a target falls exactly on a frame boundary


@dataclass(frozen=True)
class SamplePlan:
    """What to decode.

    Attributes:
        times: (T,) float64 target times in seconds from the first frame, ascending.
        indices: (T,) int64 index of the frame displayed at each target time (may repeat when more frames
            are asked for than the span holds).
        fps: effective frame rate of the plan, ``T / (end - start)``.
        start, end: the span sampled, in seconds.
    """

    times: np.ndarray
    indices: np.ndarray
    fps: float
    start: float
    end: float


def resolve_span(duration: float, start: float | None, end: float | None) -> tuple[float, float]:
    """Clamp ``[start, end)`` to ``[0, duration]``; raise ``ValueError`` for an empty or outside span."""
    if duration <= 0:
        raise ValueError(f"video duration must be positive, got {duration}")
    s = 0.0 if start is None else float(start)
    e = duration if end is None else float(end)
    if s < 0:
        raise ValueError(f"start={s} is negative")
    if end is not None and e <= s:
        raise ValueError(f"start={s} must be < end={e}")
    if s >= duration:
        raise ValueError(f"clip starts at {s} s, at or after the end of the video ({duration:.3f} s)")
    return s, min(e, duration)


def frames_in_span(start: float, end: float, native_fps: float, num_video_frames: int) -> tuple[int, int]:
    """First and last (inclusive) frame index displayed inside ``[start, end)``."""
    first = min(int(math.floor(start * native_fps + _EPS)), num_video_frames - 1)
    last = min(int(math.ceil(end * native_fps - _EPS)) - 1, num_video_frames - 1)
    return first, max(first, last)


class FrameSampler(ABC):
    """Base class: subclasses choose how many frames a span gets (:meth:`count`)."""

    @abstractmethod
    def count(self, span: float, available: int) -> int:
        """Number of frames for a span of ``span`` seconds holding ``available`` native frames."""

    def __call__(
        self,
        duration: float,
        native_fps: float,
        num_video_frames: int | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> SamplePlan:
        """Plan the frames of ``[start, end)`` of a video.

        Args:
            duration: video length in seconds.
            native_fps: the video's average frame rate.
            num_video_frames: frames in the video (default ``round(duration * native_fps)``).
            start, end: optional span in seconds (default the whole video).

        Raises:
            ValueError: empty span, span outside the video, or non-positive fps.
        """
        if native_fps <= 0:
            raise ValueError(f"native fps must be positive, got {native_fps}")
        total = num_video_frames if num_video_frames else max(1, int(round(duration * native_fps)))
        s, e = resolve_span(duration, start, end)
        first, last = frames_in_span(s, e, native_fps, total)
        n = self.count(e - s, last - first + 1)
        times = s + (np.arange(n, dtype=np.float64) + 0.5) * (e - s) / n  # (T,) segment midpoints
        indices = np.clip(np.floor(times * native_fps + _EPS).astype(np.int64), first, last)  # (T,)
        return SamplePlan(times=times, indices=indices, fps=n / (e - s), start=s, end=e)


class UniformSampler(FrameSampler):
    """``num_frames`` frames at the midpoints of equal segments (TDC / LLaVA-Video style uniform sampling).

    Always returns exactly ``num_frames`` frames; when the span holds fewer frames some repeat.

    Example:
        >>> UniformSampler(2)(duration=10.0, native_fps=1.0).times.tolist()
        [2.5, 7.5]
    """

    def __init__(self, num_frames: int) -> None:
        if int(num_frames) < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)

    def count(self, span: float, available: int) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return f"UniformSampler(num_frames={self.num_frames})"


class FpsSampler(FrameSampler):
    """Frames at ``fps`` per second, capped by ``max_frames`` (and by the native frame count).

    The number of frames is ``floor(span * fps)`` (at least 1), then ``min(., max_frames, native frames)``;
    the plan's ``fps`` is the rate actually obtained after the caps, never the requested one.

    Example:
        >>> plan = FpsSampler(2.0, max_frames=4)(duration=10.0, native_fps=25.0)
        >>> len(plan.times), plan.fps
        (4, 0.4)
    """

    def __init__(self, fps: float, max_frames: int | None = None) -> None:
        if not fps or float(fps) <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if max_frames is not None and int(max_frames) < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        self.fps = float(fps)
        self.max_frames = None if max_frames is None else int(max_frames)

    def count(self, span: float, available: int) -> int:
        n = max(1, int(math.floor(span * self.fps + _EPS)))
        if self.max_frames is not None:
            n = min(n, self.max_frames)
        return max(1, min(n, available))

    def __repr__(self) -> str:
        return f"FpsSampler(fps={self.fps}, max_frames={self.max_frames})"

