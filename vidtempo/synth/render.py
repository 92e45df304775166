"""Render an :class:`~vidtempo.synth.script.EventScript` to a real H.264 + AAC mp4 with PyAV.

Frames are drawn with numpy (one background image per layout, shape masks per object) and encoded with
libx264 (``ultrafast``, one thread, which keeps the bytes deterministic); the audio is a mono float track of sine
beeps encoded as AAC. A 30 s 64x64 video at 8 fps renders in about 0.25 s of CPU, most of it AAC encoding.

Files are written under a temporary name in the destination folder and moved into place with ``os.replace``,
so an interrupted run never leaves a half-written file under the final name. The mp4's ``comment`` tag stores
the script's fingerprint; :func:`is_valid_video` uses it to decide whether a re-run may keep a file.

Example:
    >>> import tempfile, pathlib
    >>> from vidtempo.synth.script import sample_script
    >>> from vidtempo.synth.render import write_video, is_valid_video
    >>> s = sample_script(seed=0, index=0, fps=8, min_duration=6, max_duration=6)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / f"{s.video_id}.mp4"
    >>> write_video(s, path, size=32)
    >>> is_valid_video(path, s, size=32)
    True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vidtempo.synth.script import OBJECT_COLORS, Background, EventScript, ObjectTrack, background_array

RENDER_VERSION = 1
DEFAULT_SAMPLE_RATE = 16000
BEEP_AMPLITUDE = 0.5
RAMP_S = 0.01  # raised-cosine fade in/out of each beep, avoids clicks
TAG_PREFIX = "temposynth:"
TMP_SUFFIX = ".tmp.mp4"


class RenderError(RuntimeError):
    """A video could not be rendered or written (names the file)."""


# ------------------------------------------------------------------------------------------------ frames
def background_image(bg: Background, size: int) -> np.ndarray:
    """(H, W, 3) float32 image of a background. Cached: read-only, copy before editing."""
    return background_array(bg, size)


def background_at(script: EventScript, t: float, size: int) -> np.ndarray:
    """(H, W, 3) float32 background at time ``t``: the scene's image, or a blend during a gradual change."""
    scene = next((s for s in reversed(script.scenes) if s.start <= t), script.scenes[0])
    img = background_image(scene.background, size)
    for g in script.gradual:
        if scene.start <= g.start < scene.end and t >= g.start:
            alpha = min((t - g.start) / (g.end - g.start), 1.0)
            img = (1 - alpha) * img + alpha * background_image(g.target, size)
    return img


def shape_mask(obj: ObjectTrack, t: float, size: int) -> np.ndarray:
    """(H, W) bool mask of ``obj`` at time ``t`` (drawn whether or not it is visible then)."""
    cx, cy = obj.position(t)
    cx, cy, r = cx * size, cy * size, obj.size * size / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    if obj.shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if obj.shape == "square":
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    if obj.shape == "triangle":  # apex up, base 2r wide
        top = cy - r
        return (yy >= top) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - top) / 2)
    raise RenderError(f"unknown shape '{obj.shape}'")


def render_frames(script: EventScript, size: int) -> np.ndarray:
    """Draw every frame. Returns (T, H, W, 3) uint8, frame ``k`` shown at ``k / fps`` seconds."""
    if size < 16 or size % 2:
        raise RenderError(f"size must be an even number >= 16 (yuv420p), got {size}")
    frames = np.empty((script.num_frames, size, size, 3), np.uint8)
    for k in range(script.num_frames):
        t = k / script.fps
        img = background_at(script, t, size).copy()
        for obj in script.visible_objects(t):
            img[shape_mask(obj, t, size)] = OBJECT_COLORS[obj.color]
        frames[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames


# ------------------------------------------------------------------------------------------------- audio
def render_audio(script: EventScript, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """The mono track: silence plus one sine tone per beep. Returns (S,) float32 in [-1, 1]."""
    n_total = round(script.duration * sample_rate)
    audio = np.zeros(n_total, np.float32)
    ramp = max(int(RAMP_S * sample_rate), 1)
    for b in script.beeps:
        n0, n = round(b.time * sample_rate), round(b.length * sample_rate)
        n = min(n, n_total - n0)
        if n <= 0:
            continue
        i = np.arange(n, dtype=np.float64)
        env = np.ones(n)
        r = min(ramp, n // 2)
        fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
        env[:r], env[n - r:] = fade, fade[::-1]
        audio[n0:n0 + n] += (BEEP_AMPLITUDE * env * np.sin(2 * np.pi * b.freq * i / sample_rate)).astype(np.float32)
    return audio


# ------------------------------------------------------------------------------------------------ encode
def encode_mp4(path: str | Path, frames: np.ndarray, audio: np.ndarray, *, fps: int, sample_rate: int,
               comment: str = "", gop: int = 16, crf: int = 18) -> None:
    """Encode (T, H, W, 3) uint8 ``frames`` and (S,) float32 ``audio`` into an H.264 + AAC mp4 at ``path``."""
    import av  # heavy import kept local

    container = av.open(str(path), mode="w", format="mp4")
    try:
        if comment:
            container.metadata["comment"] = comment
        vs = container.add_stream("libx264", rate=fps)
        vs.height, vs.width = frames.shape[1:3]
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": str(crf), "g": str(gop), "threads": "1"}
        aus = container.add_stream("aac", rate=sample_rate, layout="mono")
        aus.bit_rate = 48000
        for k, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = k
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        chunk = aus.codec_context.frame_size or 1024
        for i in range(0, len(audio), chunk):
            frame = av.AudioFrame.from_ndarray(audio[None, i:i + chunk], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, i
            container.mux(aus.encode(frame))
        container.mux(aus.encode(None))
    finally:
        container.close()


def render_params(size: int, sample_rate: int) -> dict[str, int]:
    """Everything besides the script that changes the rendered bytes (part of the fingerprint)."""
    return {"size": size, "sample_rate": sample_rate, "render_version": RENDER_VERSION}


def video_tag(script: EventScript, size: int, sample_rate: int) -> str:
    """The ``comment`` tag written into the mp4 of ``script``."""
    return TAG_PREFIX + script.fingerprint(**render_params(size, sample_rate))


def write_video(script: EventScript, path: str | Path, *, size: int = 64,
                sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
    """Render ``script`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    Raises:
        RenderError: encoding or writing failed; no file is left under ``path`` or the temporary name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{TMP_SUFFIX}")
    try:
        frames = render_frames(script, size)  # (T, H, W, 3)
        audio = render_audio(script, sample_rate)  # (S,)
        encode_mp4(tmp, frames, audio, fps=script.fps, sample_rate=sample_rate,
                   comment=video_tag(script, size, sample_rate))
        os.replace(tmp, path)
    except BaseException as err:  # incl. KeyboardInterrupt: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        if isinstance(err, Exception):
            raise RenderError(f"{path}: rendering failed: {err}") from err
        raise


def is_valid_video(path: str | Path, script: EventScript, *, size: int = 64,
                   sample_rate: int = DEFAULT_SAMPLE_RATE) -> bool:
    """True when ``path`` is a complete mp4 rendered from exactly this script and these parameters."""
    import av

    path = Path(path)
    if not path.is_file():
        return False
    try:
        with av.open(str(path)) as container:
            if container.metadata.get("comment") != video_tag(script, size, sample_rate):
                return False
            if not container.streams.video or not container.streams.audio:
                return False
            vs = container.streams.video[0]
            return vs.frames == script.num_frames and vs.width == size and vs.height == size
    except (av.error.FFmpegError, OSError, ValueError):
        return False


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files left by an interrupted run in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
