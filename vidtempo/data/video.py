"""Video decoding: sample first, then decode only the frames needed, with interchangeable backends.

Backends (kind ``decoder`` in the registry): :class:`PyAVDecoder` (default, bundled FFmpeg),
:class:`DecordDecoder` and :class:`TorchCodecDecoder`. All open a file, expose :class:`VideoMeta`, return
the frames displayed at given frame indices, and close their container (use them as context managers).

``size`` everywhere means: ``None`` = native size; an ``int`` = resize so the *short side* has that many
pixels, keeping the aspect ratio (long side rounded to an even number); a ``(H, W)`` tuple = exactly that.

Example:
    >>> import tempfile, pathlib
    >>> from vidtempo.data.testing import make_test_video
    >>> path = make_test_video(pathlib.Path(tempfile.mkdtemp()) / "v.mp4", duration=2.0, fps=8)
    >>> clip = load_clip(path, num_frames=4)
    >>> tuple(clip.frames.shape), clip.timestamps.tolist(), clip.fps
    ((4, 48, 64, 3), [0.25, 0.75, 1.25, 1.75], 2.0)
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidtempo.data.errors import VideoDecodeError
from vidtempo.data.sampling import FpsSampler, SamplePlan, UniformSampler

Size = int | tuple[int, int] | None


@dataclass
class VideoMeta:
    """Stream facts read without decoding.

    Attributes:
        duration: seconds from the first frame to the end of the last one.
        fps: average native frame rate.
        num_frames: frames in the stream (from the container header, else ``round(duration * fps)``).
        width, height: native frame size in pixels.
    """

    duration: float
    fps: float
    num_frames: int
    width: int
    height: int


@dataclass
class Clip:
    """Decoded frames of one video (or one ``[start, end)`` span of it).

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        timestamps: (T,) float64 presentation time of each returned frame, in seconds from the video's
            first frame (absolute in the video, also when ``start`` is set).
        duration: seconds covered by the sampled span (``end - start``; the whole video by default).
        fps: effective frame rate of the returned frames, ``T / duration`` (after every cap).
        indices: (T,) int64 native index of each returned frame.
        start, end: the span sampled, in seconds (``end`` clamped to the video's end).
        video_duration: length of the whole video in seconds.
        native_fps: the video's own average frame rate.
        path: the file decoded.
    """

    frames: torch.Tensor
    timestamps: torch.Tensor
    duration: float
    fps: float
    indices: torch.Tensor
    start: float
    end: float
    video_duration: float
    native_fps: float
    path: str


def output_size(size: Size, height: int, width: int) -> tuple[int, int] | None:
    """Target (H, W) for a ``size`` argument (see module doc), or None for native size."""
    if size is None:
        return None
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        scale = size / min(height, width)
        long_side = lambda n: max(2, int(round(n * scale / 2)) * 2)  # noqa: E731
        return (size, long_side(width)) if height <= width else (long_side(height), size)
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be (H, W) with positive values, got {size}")
    return h, w


class VideoDecoder(ABC):
    """One open video file. Subclasses fill :attr:`meta` in ``__init__`` and implement :meth:`get_frames`.

    Raises :class:`VideoDecodeError` (path + reason) for a missing, unreadable or frameless file.
    """

    name: str = ""

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        self.path = Path(path)
        self.threads = threads
        if not self.path.is_file():
            raise VideoDecodeError(self.path, "file not found")
        self.meta: VideoMeta

    @abstractmethod
    def get_frames(self, indices: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Frames displayed at native ``indices`` (ascending, repeats allowed).

        Returns:
            ((T, H, W, 3) uint8 frames, (T,) float64 presentation times in seconds).
        """

    def close(self) -> None:
        """Release the container (idempotent); subclasses extend this."""
        self.closed = True

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _fail(self, reason: str) -> VideoDecodeError:
        return VideoDecodeError(self.path, f"{reason} [{self.name}]")


class PyAVDecoder(VideoDecoder):
    """PyAV backend: seeks to the keyframe before a target only when it lies past the decode position.

    Keyframe times come from one demux pass over packets (no decoding), which also detects truncated files
    (header duration far past the last packet). Only the frame under the decode head is held, so memory
    does not grow with video length. ``stats`` counts seeks and decoded frames.

    Example:
        >>> import tempfile, pathlib
        >>> from vidtempo.data.testing import make_test_video
        >>> p = make_test_video(pathlib.Path(tempfile.mkdtemp()) / "v.mp4", duration=1.0, audio=False)
        >>> with PyAVDecoder(p) as dec:
        ...     frames, times = dec.get_frames(np.array([0, 7]), None)
        >>> frames.shape, times.tolist()
        ((2, 48, 64, 3), [0.0, 0.875])
    """

    name = "pyav"

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        super().__init__(path, threads=threads)
        import av

        self._av = av
        self.stats = {"seeks": 0, "decoded": 0}  # cumulative, for tests and benchmarks
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise self._fail(f"cannot open container: {err}") from err
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        if not self._container.streams.video:
            raise self._fail("no video stream (zero decodable frames)")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO" if self.threads != 1 else "SLICE"
        stream.codec_context.thread_count = self.threads
        self._stream = stream
        tb = float(stream.time_base)
        rate = stream.average_rate or stream.guessed_rate
        self._start_pts = stream.start_time or 0
        keys, last_pts = self._scan_keyframes()
        if not keys:
            raise self._fail("no keyframe packet in the video stream (zero decodable frames)")
        self._keys = keys  # ascending keyframe pts
        fps = float(rate) if rate else 0.0
        if fps <= 0:
            raise self._fail("frame rate unknown")
        packets_end = (last_pts - self._start_pts) * tb + 1.0 / fps
        header = stream.duration * tb if stream.duration else (self._container.duration or 0) / 1e6
        if header and header - packets_end > max(1.0, 0.1 * header):
            raise self._fail(f"truncated file: the header says {header:.3f} s but video packets end at "
                             f"{packets_end:.3f} s")
        duration = header or packets_end
        count = stream.frames or max(1, int(round(duration * fps)))
        self._tb = tb
        self.meta = VideoMeta(duration, fps, count, stream.codec_context.width, stream.codec_context.height)

    def _scan_keyframes(self) -> tuple[list[int], int]:
        keys: list[int] = []
        last = self._start_pts
        try:
            for packet in self._container.demux(self._stream):
                if packet.pts is None:
                    continue
                last = max(last, packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except self._av.error.FFmpegError as err:
            if not keys:
                raise self._fail(f"corrupt container: {err}") from err
        return sorted(keys), last

    def get_frames(self, indices: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        fps, start = self.meta.fps, self._start_pts
        frames, times = [], []
        last: tuple[int, np.ndarray] | None = None  # (pts, rgb) of the previous output, reused on repeats
        self._reset_head()
        for i in indices:
            # pts at which frame i starts to be shown, nudged a quarter frame later against rounding error
            target = start + (int(i) + 0.25) / fps / self._tb
            pts, frame = self._frame_at(target)
            if last is None or last[0] != pts:
                last = (pts, self._to_rgb(frame, size))
            frames.append(last[1])
            times.append((pts - start) * self._tb)
        self._reset_head()
        return np.stack(frames), np.asarray(times, dtype=np.float64)

    def _reset_head(self) -> None:
        self._iter: Any = None  # decode iterator
        self._cur: tuple[int, Any] | None = None  # latest decoded frame shown at or before the last target
        self._ahead: Any = None  # decoded frame past the last target, not consumed yet
        self._pos = -math.inf  # pts of the last decoded frame

    def _frame_at(self, target: float) -> tuple[int, Any]:
        """The (pts, frame) shown at pts ``target``: decode forward, seeking first only when the keyframe
        before ``target`` lies past the decode head (or ``target`` is behind it)."""
        key = self._keys[max(bisect.bisect_right(self._keys, target) - 1, 0)]
        behind = self._cur is not None and target < self._cur[0]
        if self._iter is None or key > self._pos or behind:
            self._container.seek(int(key), stream=self._stream, backward=True, any_frame=False)
            self.stats["seeks"] += 1
            self._iter = self._container.decode(self._stream)
            self._cur, self._ahead, self._pos = None, None, -math.inf
        while True:
            if self._ahead is not None:
                if self._ahead.pts > target:
                    return self._cur if self._cur is not None else (self._ahead.pts, self._ahead)
                self._cur, self._ahead = (self._ahead.pts, self._ahead), None
            try:
                frame = next(self._iter)
            except StopIteration:
                return self._end_of_stream(target)
            except self._av.error.FFmpegError as err:
                raise self._fail(f"decoding failed near pts {target:.0f}: {err}") from err
            self.stats["decoded"] += 1
            if frame.pts is not None:
                self._ahead, self._pos = frame, frame.pts

    def _end_of_stream(self, target: float) -> tuple[int, Any]:
        self._pos = math.inf  # the exhausted iterator stays: later targets end here too
        if self._cur is None:
            raise self._fail("zero decodable frames")
        if (target - self._cur[0]) * self._tb > 1.5 / self.meta.fps:
            raise self._fail(
                f"stream ends at {(self._cur[0] - self._start_pts) * self._tb:.3f} s, before the frame at "
                f"{(target - self._start_pts) * self._tb:.3f} s (truncated file?)"
            )
        return self._cur

    @staticmethod
    def _to_rgb(frame: Any, size: tuple[int, int] | None) -> np.ndarray:
        if size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", height=size[0], width=size[1], interpolation="BILINEAR")

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            self._reset_head()
            container.close()
            self._container = None


class DecordDecoder(VideoDecoder):
    """decord ``VideoReader`` backend (``pip install decord``); decord seeks and decodes only what it needs.

    Example:
        >>> import tempfile, pathlib
        >>> from vidtempo.data.testing import make_test_video
        >>> p = make_test_video(pathlib.Path(tempfile.mkdtemp()) / "v.mp4", duration=1.0, audio=False)
        >>> with DecordDecoder(p) as dec:
        ...     frames, times = dec.get_frames(np.array([0, 7]), (24, 32))
        >>> frames.shape, times.tolist()
        ((2, 24, 32, 3), [0.0, 0.875])
    """

    name = "decord"

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        super().__init__(path, threads=threads)
        from vidtempo.utils.imports import require

        self._decord = require("decord", package="decord", why="the 'decord' video backend")
        self._readers: dict[tuple[int, int] | None, Any] = {}
        reader = self._reader(None)
        n = len(reader)
        if n == 0:
            raise self._fail("zero decodable frames")
        fps = float(reader.get_avg_fps())
        if fps <= 0:
            raise self._fail("frame rate unknown")
        first, last = reader.get_frame_timestamp([0, n - 1])
        h, w = self._native_hw(reader)
        self._t0 = float(first[0])
        duration = max(float(last[1]) - self._t0, n / fps)  # decord's index can end early on damaged files
        self.meta = VideoMeta(duration, fps, n, w, h)

    @staticmethod
    def _native_hw(reader: Any) -> tuple[int, int]:
        shape = reader[0].shape  # (H, W, 3); decodes one frame
        return int(shape[0]), int(shape[1])

    def _reader(self, size: tuple[int, int] | None) -> Any:
        if size not in self._readers:
            h, w = size if size is not None else (-1, -1)
            try:
                self._readers[size] = self._decord.VideoReader(
                    str(self.path), ctx=self._decord.cpu(0), width=w, height=h, num_threads=self.threads
                )
            except (self._decord.DECORDError, RuntimeError) as err:
                raise self._fail(f"cannot open container: {str(err).splitlines()[0]}") from err
        return self._readers[size]

    def get_frames(self, indices: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        # decord 0.6's own resize (VideoReader(width=, height=)) fails on some inputs ("from_size == to_size"
        # for a 64x64 -> 48x48 request): decode at native size and resize in torch instead.
        reader = self._reader(None)
        idx = [int(i) for i in indices]
        try:
            frames = reader.get_batch(idx).asnumpy()  # (T, H, W, 3)
            times = reader.get_frame_timestamp(idx)[:, 0].astype(np.float64) - self._t0
        except (self._decord.DECORDError, RuntimeError) as err:
            raise self._fail(f"decoding failed: {str(err).splitlines()[0]}") from err
        if size is not None and tuple(frames.shape[1:3]) != tuple(size):
            frames = _resize(torch.from_numpy(frames), size).numpy()
        return frames, times

    def close(self) -> None:
        self._readers = {}  # decord has no close(): dropping the reader frees the demuxer


class TorchCodecDecoder(VideoDecoder):
    """torchcodec ``VideoDecoder`` backend (CPU). Needs ``pip install torchcodec`` (the ``torchcodec`` extra) and
    FFmpeg's shared libraries (``make system-deps``; docs/data.md).

    ``seek_mode="exact"``: one packet scan on open (like PyAV's keyframe scan) gives exact frame counts and
    pts; frames are then decoded by seeking per target. Native-size frames equal PyAV's; a resize is bilinear
    with antialiasing in torch (within a few levels of PyAV's swscale resize). Raises ``ImportError`` naming
    the missing package or library when torchcodec cannot be loaded.

    Example:
        >>> import tempfile, pathlib
        >>> from vidtempo.data.testing import make_test_video
        >>> p = make_test_video(pathlib.Path(tempfile.mkdtemp()) / "v.mp4", duration=1.0, audio=False)
        >>> with TorchCodecDecoder(p) as dec:  # doctest: +SKIP
        ...     frames, times = dec.get_frames(np.array([0, 7]), (24, 32))
        >>> frames.shape, times.tolist()  # doctest: +SKIP
        ((2, 24, 32, 3), [0.0, 0.875])
    """

    name = "torchcodec"

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        tc = _import_torchcodec()
        super().__init__(path, threads=threads)
        try:
            self._dec: Any = tc.decoders.VideoDecoder(
                str(self.path), dimension_order="NHWC", num_ffmpeg_threads=self.threads, seek_mode="exact"
            )
        except (RuntimeError, ValueError) as err:
            raise self._fail(f"cannot open container: {err}") from err
        md = self._dec.metadata
        n = int(md.num_frames or 0)
        if n == 0:
            raise self._fail("zero decodable frames")
        fps = float(md.average_fps or 0)
        if fps <= 0:
            raise self._fail("frame rate unknown")
        begin = float(md.begin_stream_seconds or 0.0)
        end = float(md.end_stream_seconds or md.duration_seconds or n / fps)
        self._t0 = begin
        self.meta = VideoMeta(end - begin, fps, n, int(md.width), int(md.height))

    def get_frames(self, indices: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        if self._dec is None:
            raise self._fail("decoder is closed")
        try:
            batch = self._dec.get_frames_at(indices=[int(i) for i in indices])
        except (RuntimeError, IndexError) as err:
            raise self._fail(f"decoding failed: {err}") from err
        frames = batch.data  # (T, H, W, 3) uint8
        if size is not None and tuple(frames.shape[1:3]) != tuple(size):
            frames = _resize(frames, size)
        return frames.numpy(), batch.pts_seconds.double().numpy() - self._t0

    def close(self) -> None:
        self._dec = None


def _import_torchcodec() -> Any:
    try:
        import torchcodec.decoders  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "the 'torchcodec' video backend needs the 'torchcodec' package (pip install torchcodec, or the "
            f"'torchcodec' extra) and FFmpeg's shared libraries (`make system-deps`; docs/data.md): {err}"
        ) from err
    except (OSError, RuntimeError) as err:  # package present, native library missing
        raise ImportError(
            "torchcodec is installed but cannot load FFmpeg's shared libraries (libavcodec, libavformat, "
            "libavutil, libavdevice, libavfilter, libswscale, libswresample of FFmpeg 4 or newer): run `make "
            f"system-deps` as root, or see docs/data.md for an install without root ({' '.join(str(err).split())[:300]})"
        ) from err
    import torchcodec

    return torchcodec


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8, bilinear with antialiasing (without it a downscale aliases:
    up to 60-90 levels away from PyAV's swscale resize of the same frame, instead of a few)."""
    x = frames.permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


BACKENDS: dict[str, type[VideoDecoder]] = {
    "pyav": PyAVDecoder,
    "decord": DecordDecoder,
    "torchcodec": TorchCodecDecoder,
}


def open_video(path: str | Path, backend: str = "pyav", *, threads: int = 0) -> VideoDecoder:
    """Open ``path`` with a backend name from :data:`BACKENDS` or a registered ``decoder`` alias/dotted path."""
    cls = BACKENDS.get(backend)
    if cls is None:
        from vidtempo.registry import get_registry

        cls = get_registry("decoder").resolve(backend)
    return cls(path, threads=threads)


def plan_frames(
    meta: VideoMeta,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> SamplePlan:
    """The frames ``load_clip`` will take, computed from metadata only (raises ``ValueError`` on bad args)."""
    if num_frames is not None and fps is not None:
        raise ValueError("give num_frames or fps, not both")
    if num_frames is not None:
        n = num_frames if max_frames is None else min(num_frames, max_frames)
        sampler = UniformSampler(n)
    else:  # fps=None: every native frame of the span
        sampler = FpsSampler(fps if fps is not None else meta.fps, max_frames)
    return sampler(meta.duration, meta.fps, meta.num_frames, start, end)


def load_clip(
    path: str | Path,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    size: Size = None,
    backend: str = "pyav",
    threads: int = 0,
) -> Clip:
    """Sample frames from a video, then decode only those.

    Args:
        path: video file.
        num_frames: uniform sampling, one frame at the midpoint of each of ``num_frames`` equal segments
            (exactly ``num_frames`` frames, repeats if the span is shorter; capped by ``max_frames``).
        fps: sample at this rate instead (capped by ``max_frames`` and the native rate). With neither
            ``num_frames`` nor ``fps``: every native frame of the span, capped by ``max_frames``.
        max_frames: upper bound on the number of frames; ``Clip.fps`` reports the rate after the cap.
        start, end: restrict to ``[start, end)`` seconds; ``end`` past the video is clamped to its end.
        size: None (native), int (short side, aspect kept) or (H, W).
        backend: ``pyav`` (default), ``decord``, ``torchcodec``, or a ``decoder`` registry alias/dotted path.
        threads: decoder threads (0 = backend default).

    Raises:
        VideoDecodeError: missing file, unreadable container, zero decodable frames, ``start >= end``,
            a clip that starts after the video ends, or frames that cannot be decoded.
        ImportError: the backend's package or native library is missing.

    A still image (a suffix in :data:`IMAGE_SUFFIXES`: ``.jpg``, ``.png``, ...) is one frame at time 0.0 whatever the
    sampling arguments ask for.
    """
    if is_image(path):
        if start is not None or end is not None:
            raise VideoDecodeError(path, f"an image has no time span (start={start}, end={end})")
        return load_image_clip(path, size=size)
    with open_video(path, backend, threads=threads) as decoder:
        meta = decoder.meta
        try:
            plan = plan_frames(meta, num_frames=num_frames, fps=fps, max_frames=max_frames, start=start, end=end)
        except ValueError as err:
            raise VideoDecodeError(path, str(err)) from err
        frames, times = decoder.get_frames(plan.indices, output_size(size, meta.height, meta.width))
    return Clip(
        frames=torch.from_numpy(np.ascontiguousarray(frames)),
        timestamps=torch.from_numpy(times),
        duration=plan.end - plan.start,
        fps=plan.fps,
        indices=torch.from_numpy(plan.indices.copy()),
        start=plan.start,
        end=plan.end,
        video_duration=meta.duration,
        native_fps=meta.fps,
        path=str(path),
    )


# ---------------------------------------------------------------------------------------------- still images
# LLaVA image records (``"image": "x.jpg"``) train as 1-frame clips. The clip holds exactly one frame at time 0.0
# whatever ``num_frames`` / ``fps`` ask for (an image is one moment; repeating it only adds identical tokens),
# resized as video frames are (``size``: None native, int short side, (H, W) exact; bilinear).

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def is_image(path: str | Path) -> bool:
    """Whether ``path`` names a still image by its suffix (case-insensitive; a ``.gif`` is read as a video).

    Example:
        >>> is_image("coco/0001.JPG"), is_image("clip.mp4")
        (True, False)
    """
    return Path(str(path)).suffix.lower() in IMAGE_SUFFIXES


def load_image_clip(path: str | Path, *, size: Size = None) -> Clip:
    """One RGB frame of an image file as a :class:`Clip` (T = 1, timestamp 0.0, duration 0.0).

    Raises:
        VideoDecodeError: the file is missing or is not a readable image (the collator then skips the sample
            and counts it against ``data.max_skip_fraction``, as for an undecodable video).

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("RGB", (64, 48), (255, 0, 0)).save(path)
        >>> clip = load_clip(path, num_frames=8, size=(32, 32))
        >>> tuple(clip.frames.shape), clip.timestamps.tolist(), clip.frames[0, 0, 0].tolist()
        ((1, 32, 32, 3), [0.0], [255, 0, 0])
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(path, "image file not found")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        target = output_size(size, rgb.height, rgb.width)
        if target is not None and target != (rgb.height, rgb.width):
            rgb = rgb.resize((target[1], target[0]), Image.Resampling.BILINEAR)
        frame = np.array(rgb, dtype=np.uint8)  # (H, W, 3)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise VideoDecodeError(path, f"not a readable image ({type(err).__name__}: {err})") from err
    return Clip(
        frames=torch.from_numpy(frame)[None],  # (1, H, W, 3)
        timestamps=torch.zeros(1, dtype=torch.float64),
        duration=0.0,
        fps=0.0,
        indices=torch.zeros(1, dtype=torch.int64),
        start=0.0,
        end=0.0,
        video_duration=0.0,
        native_fps=0.0,
        path=str(path),
    )
