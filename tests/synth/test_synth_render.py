"""Decode generated videos and check that pixels and sound agree with the scripts."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from vidtempo.synth.generate import Manifest
from vidtempo.synth.render import RenderError, is_valid_video, render_frames, shape_mask, write_video
from vidtempo.synth.script import OBJECT_COLORS, EventScript, sample_script

SR = 16000


def decode(path: Path, sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns frames (T, H, W, 3) uint8, their times (T,) in seconds and mono audio (S,) float32."""
    frames, times, audio = [], [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.time))
    with av.open(str(path)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for f in c.decode(audio=0):
            audio.extend(r.to_ndarray().ravel() for r in res.resample(f))
    return np.stack(frames), np.array(times), np.concatenate(audio).astype(np.float32)


@pytest.fixture(scope="module")
def decoded(small_set: Manifest) -> dict[str, tuple[EventScript, np.ndarray, np.ndarray, np.ndarray]]:
    """video id -> (script, frames (T, H, W, 3), times (T,), audio (S,))."""
    scripts = small_set.scripts()
    return {vid: (s, *decode(small_set.video_path(vid), SR)) for vid, s in scripts.items()}


def _shift_or(m: np.ndarray, r: int, axis: int, op) -> np.ndarray:
    """OR (dilate) or AND (erode) of ``m`` with its shifts by -r..r along ``axis`` (zero padded)."""
    out = m.copy()
    n = m.shape[axis]
    for d in range(1, r + 1):
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[axis], hi[axis] = slice(0, n - d), slice(d, n)
        fwd, bwd = np.zeros_like(m), np.zeros_like(m)
        fwd[tuple(hi)], bwd[tuple(lo)] = m[tuple(lo)], m[tuple(hi)]
        out = op(op(out, fwd), bwd)
    return out


def _dilate(m: np.ndarray, r: int = 2) -> np.ndarray:
    """Square dilation over the last two axes of a (..., H, W) bool stack."""
    return _shift_or(_shift_or(m, r, -1, np.logical_or), r, -2, np.logical_or)


def _interior(m: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood lies in the mask (away from chroma-subsampled edges)."""
    return _shift_or(_shift_or(m, 1, -1, np.logical_and), 1, -2, np.logical_and)


@pytest.fixture(scope="module")
def masks(decoded) -> dict[str, np.ndarray]:
    """video id -> (O, T, H, W) bool: where each object is drawn at each frame time (visible or not)."""
    return {vid: np.stack([np.stack([shape_mask(o, t, 64) for t in times]) for o in s.objects])
            for vid, (s, _, times, _) in decoded.items()}


def test_streams_frames_and_timestamps(decoded) -> None:
    for s, frames, times, audio in decoded.values():
        assert frames.shape == (s.num_frames, 64, 64, 3)
        np.testing.assert_allclose(times, np.arange(s.num_frames) / s.fps, atol=1e-6)
        assert abs(len(audio) / SR - s.duration) < 0.1


def test_objects_visible_exactly_inside_their_interval(decoded, masks) -> None:
    checked_in = checked_out = 0
    for vid, (s, frames, times, _) in decoded.items():
        m = masks[vid]  # (O, T, H, W)
        vis = np.array([[o.visible(t) for t in times] for o in s.objects])  # (O, T)
        inner = _interior(m)
        drawn_near = _dilate(m & vis[:, :, None, None])  # (O, T, H, W) where visible objects are drawn
        for i, o in enumerate(s.objects):
            color = np.array(OBJECT_COLORS[o.color], np.int16)
            others = np.delete(drawn_near, i, axis=0).any(axis=0)  # (T, H, W)
            for k in range(len(times)):
                if (others[k] & inner[i, k]).any():
                    continue  # another object is drawn next to this spot right now
                close = np.abs(frames[k][inner[i, k]].astype(np.int16) - color).max(axis=1) < 60
                if vis[i, k]:
                    assert close.mean() > 0.9, (vid, o.name, times[k])
                    checked_in += 1
                else:
                    assert close.mean() < 0.1, (vid, o.name, times[k])
                    checked_out += 1
    assert checked_in > 200 and checked_out > 500


def _band_ratio(seg: np.ndarray, freq: float, width: float = 60.0) -> tuple[float, float]:
    """(fraction of spectral energy within ``width`` Hz of ``freq``, dominant frequency)."""
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
    f = np.fft.rfftfreq(len(seg), 1 / SR)
    return float(spec[np.abs(f - freq) < width].sum() / spec.sum()), float(f[spec.argmax()])


def test_beeps_audible_at_their_times_with_their_pitch(decoded) -> None:
    for s, _, _, audio in decoded.values():
        for b in s.beeps:
            seg = audio[round((b.time + 0.05) * SR): round((b.time + b.length - 0.05) * SR)]
            assert np.sqrt(np.mean(seg**2)) > 0.2, (s.video_id, b)
            ratio, peak = _band_ratio(seg, b.freq)
            assert ratio > 0.9 and abs(peak - b.freq) < 30, (s.video_id, b, ratio, peak)
            assert (peak < 500) == (b.pitch == "low")
        quiet = np.ones(len(audio), bool)
        for b in s.beeps:  # everything farther than 0.05 s from a beep is silent
            quiet[max(round((b.time - 0.05) * SR), 0): round((b.time + b.length + 0.05) * SR)] = False
        assert np.sqrt(np.mean(audio[quiet] ** 2)) < 0.01


def test_cuts_are_the_only_big_background_changes(decoded, masks) -> None:
    seen_gradual = 0
    for vid, (s, frames, times, _) in decoded.items():
        f = frames.astype(np.float32)
        vis = np.array([[o.visible(t) for t in times] for o in s.objects])  # (O, T)
        covered = _dilate(masks[vid] & vis[:, :, None, None]).any(axis=0)  # (T, H, W)
        cut_frames = {math.ceil(c * s.fps - 1e-6) for c in s.cuts}
        for k in range(1, len(f)):
            background = ~(covered[k] | covered[k - 1])
            diff = float(np.abs(f[k] - f[k - 1])[background].mean())
            if k in cut_frames:
                assert diff > 30, (vid, times[k], diff)
            else:
                assert diff < 8, (vid, times[k], diff)
        for g in s.gradual:  # a gradual change is a real change, only spread out
            k0, k1 = math.ceil(g.start * s.fps), min(math.ceil(g.end * s.fps), len(f) - 1)
            assert np.abs(f[k1] - f[k0]).mean() > 8, (vid, g)
            seen_gradual += 1
    assert seen_gradual >= 3


def test_write_video_is_deterministic_and_validated(tmp_path) -> None:
    s = sample_script(5, 1, fps=8, min_duration=6, max_duration=6)
    a, b = tmp_path / "a" / "x.mp4", tmp_path / "b" / "x.mp4"
    write_video(s, a, size=32)
    write_video(s, b, size=32)
    assert a.read_bytes() == b.read_bytes()
    assert is_valid_video(a, s, size=32)
    assert not is_valid_video(a, s, size=64)  # other render parameters
    assert not is_valid_video(a, sample_script(5, 2, fps=8, min_duration=6, max_duration=6), size=32)
    a.write_bytes(a.read_bytes()[: a.stat().st_size // 2])  # truncated
    assert not is_valid_video(a, s, size=32)
    assert not is_valid_video(tmp_path / "missing.mp4", s, size=32)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.mp4"]  # no temporary file left


def test_bad_size_is_a_clear_error(tmp_path) -> None:
    s = sample_script(5, 1, fps=8, min_duration=6, max_duration=6)
    with pytest.raises(RenderError, match="even number"):
        render_frames(s, 33)
    with pytest.raises(RenderError, match="x.mp4"):
        write_video(s, tmp_path / "x.mp4", size=33)
    assert list(tmp_path.iterdir()) == []
