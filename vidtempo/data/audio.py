"""Audio loading (PyAV, any container FFmpeg reads) and the windowing each method needs.

``load_audio`` returns mono float32 at the requested rate; a file without an audio track gives an empty
array, not an error. ``whisper_windows`` cuts Whisper's fixed 30-s windows (DaMO: M windows of 30 s at
16 kHz); ``per_frame_chunks`` cuts one chunk per sampled frame (TDC: per-second audio aligned to frames).

Example:
    >>> import tempfile, pathlib
    >>> from vidtempo.data.testing import make_test_video
    >>> path = make_test_video(pathlib.Path(tempfile.mkdtemp()) / "v.mp4", duration=2.0)
    >>> wave, sr = load_audio(path, sr=16000)
    >>> wave.dtype.name, sr, round(len(wave) / sr, 1)
    ('float32', 16000, 2.0)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vidtempo.data.errors import AudioDecodeError


def load_audio(
    path: str | Path, *, sr: int = 16000, start: float | None = None, end: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode the first audio track of ``path`` as mono float32 at ``sr`` Hz.

    Args:
        path: audio or video file.
        sr: output sample rate.
        start, end: optional span in seconds; the returned wave starts at ``start`` (default 0).

    Returns:
        ((S,) float32 waveform in [-1, 1], sr). ``S == 0`` when the file has no audio track or the span
        starts after the audio ends.

    Raises:
        AudioDecodeError: missing file, unreadable container, corrupt audio, or ``start >= end``.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(path, "file not found")
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    s = 0.0 if start is None else float(start)
    if s < 0 or (end is not None and float(end) <= s):
        raise AudioDecodeError(path, f"invalid span start={start}, end={end} (need 0 <= start < end)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise AudioDecodeError(path, f"cannot open container: {err}") from err
    with container:
        if not container.streams.audio:
            return np.zeros(0, dtype=np.float32), sr
        try:
            wave, t0 = _decode(container, container.streams.audio[0], sr, s, end)
        except av.error.FFmpegError as err:
            raise AudioDecodeError(path, f"audio decoding failed: {err}") from err
    skip = max(0, int(round((s - t0) * sr)))  # decoding starts at the packet before ``start``
    wave = wave[skip:]
    if end is not None:
        wave = wave[: int(round((float(end) - s) * sr))]
    return np.ascontiguousarray(wave, dtype=np.float32), sr


def _decode(container, stream, sr: int, start: float, end: float | None) -> tuple[np.ndarray, float]:  # noqa: ANN001
    """Resampled mono samples from the packet at/before ``start`` on, and the time of the first one."""
    import av

    if start > 0:
        container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
    resampling = False  # once a frame went through the resampler, every later one does (its delay buffer)
    chunks: list[np.ndarray] = []
    t0: float | None = None
    for frame in container.decode(stream):
        if t0 is None:
            t0 = float(frame.time) if frame.time is not None else 0.0
        resampling = resampling or not _is_mono_float(frame, sr)
        if resampling:
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))  # (1, n) -> (n,)
        else:  # already mono float32 at ``sr`` (AAC decodes to fltp): the resampler would only copy it
            chunks.append(np.frombuffer(frame.planes[0], dtype=np.float32, count=frame.samples))  # (n,)
        if end is not None and frame.time is not None and frame.time > end:
            break
    if resampling:
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    wave = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return wave, (t0 if t0 is not None else start)


def _is_mono_float(frame, sr: int) -> bool:  # noqa: ANN001
    """True when ``frame`` holds mono float32 samples at ``sr`` Hz: what the resampler would output."""
    return frame.sample_rate == sr and frame.format.name in ("flt", "fltp") and len(frame.layout.channels) == 1


def whisper_windows(
    wave: np.ndarray, sr: int, window_s: float = 30.0, num_windows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cut consecutive fixed-length windows (Whisper takes exactly 30 s), zero-padding the last.

    Args:
        wave: (S,) mono waveform.
        sr: its sample rate.
        window_s: window length in seconds.
        num_windows: fixed window count (extra audio is dropped, missing windows are silent with length 0);
            None = as many as needed to cover the wave (0 for an empty wave).

    Returns:
        ((W, window_s * sr) float32 windows, (W,) int64 valid samples per window).

    Example:
        >>> w, n = whisper_windows(np.ones(16000 * 45, np.float32), 16000)
        >>> w.shape, n.tolist()
        ((2, 480000), [480000, 240000])
    """
    size = int(round(window_s * sr))
    count = math.ceil(len(wave) / size) if num_windows is None else int(num_windows)
    windows = np.zeros((count, size), dtype=np.float32)  # (W, S_w)
    lengths = np.zeros(count, dtype=np.int64)  # (W,)
    for w in range(count):
        piece = wave[w * size : (w + 1) * size]
        windows[w, : len(piece)] = piece
        lengths[w] = len(piece)
    return windows, lengths


def per_frame_chunks(
    wave: np.ndarray,
    sr: int,
    timestamps: np.ndarray | list[float],
    chunk_s: float = 1.0,
    *,
    wave_start: float = 0.0,
    align: str = "center",
) -> np.ndarray:
    """One audio chunk per sampled frame, zero-padded where it runs past the wave.

    Args:
        wave: (S,) mono waveform whose first sample is at ``wave_start`` seconds of the video.
        sr: its sample rate.
        timestamps: (T,) frame times in seconds of the video (e.g. ``Clip.timestamps``).
        chunk_s: chunk length in seconds.
        wave_start: video time of ``wave[0]`` (the ``start`` passed to :func:`load_audio`).
        align: ``"center"`` (chunk centred on the frame) or ``"start"`` (chunk begins at the frame).

    Returns:
        (T, chunk_s * sr) float32.

    Example:
        >>> per_frame_chunks(np.arange(10, dtype=np.float32), 2, [0.5, 4.5], chunk_s=1.0).tolist()
        [[0.0, 1.0], [8.0, 9.0]]
    """
    if align not in ("center", "start"):
        raise ValueError(f"align must be 'center' or 'start', got {align!r}")
    size = int(round(chunk_s * sr))
    times = np.asarray(timestamps, dtype=np.float64).reshape(-1)  # (T,)
    offset = chunk_s / 2 if align == "center" else 0.0
    out = np.zeros((len(times), size), dtype=np.float32)  # (T, S_c)
    for i, t in enumerate(times):
        first = int(round((t - offset - wave_start) * sr))
        lo, hi = max(first, 0), min(first + size, len(wave))
        if hi > lo:
            out[i, lo - first : hi - first] = wave[lo:hi]
    return out
