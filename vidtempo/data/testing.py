"""Synthetic test media: real H.264 (+AAC) files whose frames carry their own index.

Each frame shows, in its top rows, a 16-bit binary code of its frame index (black/white blocks, two rows of
eight blocks, each block ``W // 8`` pixels square) over a background colour that changes at every hard cut.
Blocks this large survive lossy compression and chroma subsampling, so :func:`read_frame_index` recovers
the index from any decoded frame. Audio is a silent mono track with short sine beeps at known times.

Everything is deterministic: the same arguments give the same pixels and samples.

Example:
    >>> import tempfile, pathlib
    >>> from vidtempo.data.testing import make_test_video
    >>> path = make_test_video(pathlib.Path(tempfile.mkdtemp()) / "t.mp4", duration=2.0)
    >>> path.stat().st_size > 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

CODE_BITS = 16  # frame indices up to 65535
_BLOCKS_PER_ROW = 8
_CODE_ROWS = CODE_BITS // _BLOCKS_PER_ROW
BEEP_SECONDS = 0.1
AUDIO_RATE = 48000  # file sample rate; AAC priming (1024 samples) is ~21 ms here and is trimmed by FFmpeg
# Background colours of successive scene segments (cycled); all far from each other and from black/white.
_PALETTE = np.array(
    [[200, 40, 40], [40, 160, 60], [50, 70, 200], [200, 180, 40], [150, 50, 170], [40, 170, 170]], dtype=np.uint8
)


def _block_size(width: int) -> int:
    return width // _BLOCKS_PER_ROW


def code_height(width: int) -> int:
    """Rows at the top of a frame of ``width`` pixels taken by the frame-index code."""
    return _block_size(width) * _CODE_ROWS


def scene_of(t: float, cuts: Sequence[float]) -> int:
    """Index of the scene segment that time ``t`` (seconds) falls in, given sorted cut times."""
    return int(np.searchsorted(np.asarray(sorted(cuts), dtype=np.float64), t, side="right"))


def draw_frame(index: int, size: tuple[int, int], scene: int = 0) -> np.ndarray:
    """One synthetic frame: (H, W, 3) uint8, background of ``scene`` and the binary code of ``index``.

    Args:
        index: frame index to encode (0 <= index < 2**16).
        size: (W, H) in pixels.
        scene: scene segment number (selects the background colour).
    """
    width, height = size
    if not 0 <= index < 2**CODE_BITS:
        raise ValueError(f"frame index {index} does not fit in {CODE_BITS} bits")
    frame = np.empty((height, width, 3), dtype=np.uint8)  # (H, W, 3)
    frame[:] = _PALETTE[scene % len(_PALETTE)]
    block = _block_size(width)
    for bit in range(CODE_BITS):
        row, col = divmod(bit, _BLOCKS_PER_ROW)
        value = 255 if (index >> bit) & 1 else 0
        frame[row * block : (row + 1) * block, col * block : (col + 1) * block] = value
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """Decode the frame index drawn by :func:`draw_frame` from a decoded (H, W, 3) uint8 frame.

    Accepts a numpy array or a torch tensor. The frame must have the size it was encoded at.
    """
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {arr.shape}")
    block = _block_size(arr.shape[1])
    margin = max(1, block // 4)  # read the block centre only: edges blur under compression
    grey = arr.astype(np.float32).mean(axis=2)  # (H, W)
    index = 0
    for bit in range(CODE_BITS):
        row, col = divmod(bit, _BLOCKS_PER_ROW)
        y0, x0 = row * block + margin, col * block + margin
        patch = grey[y0 : y0 + block - 2 * margin, x0 : x0 + block - 2 * margin]
        if patch.mean() > 127.5:
            index |= 1 << bit
    return index


def beep_wave(duration: float, beeps: Sequence[tuple[float, float]], sr: int = AUDIO_RATE) -> np.ndarray:
    """Mono float32 waveform (S,) of ``duration`` seconds: silence with a 0.1 s sine at each (time, Hz)."""
    wave = np.zeros(int(round(duration * sr)), dtype=np.float32)
    n_beep = int(round(BEEP_SECONDS * sr))
    t = np.arange(n_beep, dtype=np.float64) / sr
    for start, hz in beeps:
        i0 = int(round(start * sr))
        i1 = min(i0 + n_beep, len(wave))
        if i0 < 0 or i0 >= len(wave):
            raise ValueError(f"beep at {start} s is outside the {duration} s video")
        wave[i0:i1] = (0.5 * np.sin(2 * np.pi * hz * t[: i1 - i0])).astype(np.float32)
    return wave


def make_test_video(
    path: str | Path,
    *,
    duration: float = 4.0,
    fps: float = 8,
    size: tuple[int, int] = (64, 48),
    beeps: Sequence[tuple[float, float]] = ((1.0, 880.0),),
    cuts: Sequence[float] = (),
    audio: bool = True,
    codec: str = "h264",
    gop: int | None = None,
) -> Path:
    """Write a synthetic video whose frame ``i`` shows the code of ``i`` and has pts ``i / fps``.

    Args:
        path: output file; the container follows the suffix (``.mp4``, ``.mkv``, ...).
        duration: seconds of video; ``round(duration * fps)`` frames are written.
        fps: frame rate (constant).
        size: (W, H) in pixels; W must be a multiple of 16 and at least 32, H at least the code height + 8.
        beeps: (time s, frequency Hz) of 0.1-s tones in the audio track.
        cuts: times (s) of hard scene cuts; the background colour changes at each.
        audio: add a mono AAC track (48 kHz) when True.
        codec: video encoder name known to FFmpeg (``h264``, ``hevc``, ``mpeg4``, ``libvpx-vp9``, ...).
        gop: keyframe interval in frames; None = one keyframe every 2 s.

    Returns:
        The path written.
    """
    import av

    path = Path(path)
    width, height = size
    if width < 32 or width % 16 or height < code_height(width) + 8 or height % 2:
        raise ValueError(f"size {size}: need W >= 32, W % 16 == 0, even H >= {code_height(width) + 8}")
    num_frames = int(round(duration * fps))
    wave = beep_wave(duration, beeps) if audio else None  # validates the beep times before encoding
    rate = Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream(codec, rate=rate)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.codec_context.gop_size = gop or max(1, int(round(2 * fps)))
        if codec in ("h264", "libx264"):
            vstream.codec_context.options = {"crf": "20", "preset": "ultrafast", "threads": "1"}
        elif codec in ("hevc", "libx265"):
            vstream.codec_context.options = {"x265-params": "log-level=error"}
        astream = None
        if audio:
            astream = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        for i in range(num_frames):
            img = draw_frame(i, size, scene_of(i / fps, cuts))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i  # in the encoder time base 1 / rate
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        if astream is not None:
            _write_audio(container, astream, wave)
    return path


def _write_audio(container, stream, wave: np.ndarray) -> None:  # noqa: ANN001 - PyAV objects
    import av

    chunk = 1024
    for i0 in range(0, len(wave), chunk):
        block = wave[i0 : i0 + chunk]  # (<=1024,)
        frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = i0
        frame.time_base = Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_audio_only(path: str | Path, *, duration: float = 2.0, beeps=((0.5, 880.0),)) -> Path:  # noqa: ANN001
    """Write an ``.m4a``/``.mp4`` file with an AAC track and no video stream (a "zero video frames" input)."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        _write_audio(container, stream, beep_wave(duration, beeps))
    return path


def make_corrupt_video(path: str | Path, *, kind: str = "truncated") -> Path:
    """Write an undecodable file.

    Args:
        path: output file.
        kind: ``"truncated"`` (the first 40% of a valid mp4: no index, the container cannot be opened),
            ``"truncated_stream"`` (the first half of a 4 s, 8 fps Matroska file: the header still says
            4 s / 32 frames but only the first frames decode) or ``"garbage"`` (4 KiB of seeded random bytes).
    """
    path = Path(path)
    if kind in ("truncated", "truncated_stream"):
        suffix = ".mp4" if kind == "truncated" else ".mkv"
        tmp = path.with_name(path.stem + ".full" + suffix)
        data = make_test_video(tmp, duration=4.0 if kind == "truncated_stream" else 2.0).read_bytes()
        tmp.unlink()
        path.write_bytes(data[: int(len(data) * (0.4 if kind == "truncated" else 0.5))])
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        raise ValueError(f"kind must be 'truncated', 'truncated_stream' or 'garbage', got {kind!r}")
    return path
