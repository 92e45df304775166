"""Audio loading (beeps found within 30 ms) and the window helpers."""

from __future__ import annotations

import numpy as np
import pytest

from vidtempo.data import AudioDecodeError
from vidtempo.data.audio import load_audio, per_frame_chunks, whisper_windows
from vidtempo.data.video import load_clip


def _onsets(wave: np.ndarray, sr: int, gap_s: float = 0.2) -> list[float]:
    """Start time (s) of every burst louder than 0.05 separated by more than ``gap_s`` of quiet."""
    loud = np.flatnonzero(np.abs(wave) > 0.05)
    if loud.size == 0:
        return []
    starts = [loud[0]] + [b for a, b in zip(loud[:-1], loud[1:]) if b - a > gap_s * sr]
    return [s / sr for s in starts]


@pytest.mark.parametrize("sr", [16000, 8000])
def test_beeps_at_known_times(media, spec, sr: int) -> None:
    wave, got_sr = load_audio(media["main"], sr=sr)
    assert got_sr == sr and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / sr - spec.duration) < 0.05
    found = _onsets(wave, sr)
    assert len(found) == len(spec.beeps)
    for t, (expected, _) in zip(found, spec.beeps):
        assert abs(t - expected) < 0.03


def test_beep_frequency(media, spec) -> None:
    wave, sr = load_audio(media["main"], sr=16000)
    t, hz = spec.beeps[1]
    piece = wave[int((t + 0.02) * sr) : int((t + 0.08) * sr)]
    peak = np.fft.rfftfreq(len(piece), 1 / sr)[np.argmax(np.abs(np.fft.rfft(piece)))]
    assert abs(peak - hz) < 20


def test_span_is_relative_to_start(media, spec) -> None:
    wave, sr = load_audio(media["main"], start=2.0, end=4.5)
    assert len(wave) == int(2.5 * sr)
    found = _onsets(wave, sr)
    assert [round(t, 2) for t in found] == pytest.approx([b - 2.0 for b, _ in spec.beeps[1:3]], abs=0.03)


def test_no_audio_track_gives_empty_array(media) -> None:
    wave, sr = load_audio(media["silent"])
    assert wave.shape == (0,) and wave.dtype == np.float32 and sr == 16000


@pytest.mark.parametrize(("name", "kwargs", "reason"), [
    ("missing", {}, "not found"),
    ("garbage", {}, "container"),
    ("main", {"start": 2.0, "end": 1.0}, "start < end"),
])
def test_bad_inputs(media, name, kwargs, reason) -> None:
    with pytest.raises(AudioDecodeError) as info:
        load_audio(media[name], **kwargs)
    assert reason in info.value.reason and info.value.path == str(media[name])


def test_whisper_windows() -> None:
    wave = np.arange(16000 * 70, dtype=np.float32)
    windows, lengths = whisper_windows(wave, 16000)
    assert windows.shape == (3, 480000) and lengths.tolist() == [480000, 480000, 160000]
    assert windows[2, 159999] == wave[-1] and windows[2, 160000] == 0
    fixed, flen = whisper_windows(wave, 16000, num_windows=8)
    assert fixed.shape == (8, 480000) and flen.tolist() == [480000, 480000, 160000, 0, 0, 0, 0, 0]
    assert whisper_windows(np.zeros(0, np.float32), 16000)[0].shape == (0, 480000)


def test_per_frame_chunks_follow_the_frames(media, spec) -> None:
    clip = load_clip(media["main"], fps=1.0)  # frames at 0.5, 1.5, ... s
    wave, sr = load_audio(media["main"])
    chunks = per_frame_chunks(wave, sr, clip.timestamps.numpy(), chunk_s=1.0)
    assert chunks.shape == (len(clip.timestamps), sr)
    loud = {i for i, c in enumerate(chunks) if np.abs(c).max() > 0.05}
    # centred 1-s chunks: the beep at t belongs to the frame whose chunk covers t
    times = clip.timestamps.numpy()
    expected = {int(np.flatnonzero((times - 0.5 <= b) & (b < times + 0.5))[0]) for b, _ in spec.beeps}
    assert loud == expected


def test_per_frame_chunks_offsets_and_padding() -> None:
    wave = np.arange(10, dtype=np.float32)  # 10 samples at 2 Hz = 5 s starting at video time 1.0
    out = per_frame_chunks(wave, 2, [1.0, 5.5], chunk_s=1.0, wave_start=1.0, align="start")
    assert out.tolist() == [[0.0, 1.0], [9.0, 0.0]]
    with pytest.raises(ValueError):
        per_frame_chunks(wave, 2, [1.0], align="end")


@pytest.mark.parametrize("span", [{}, {"start": 0.7, "end": 2.1}])
def test_file_rate_mono_float_skips_the_resampler_bit_for_bit(media, monkeypatch, span) -> None:
    """At the file's own rate, AAC's mono float samples are taken as decoded: the same bits the resampler
    gives (which every frame goes through when it is forced)."""
    from vidtempo.data import audio
    from vidtempo.data.testing import AUDIO_RATE

    fast, _ = load_audio(media["main"], sr=AUDIO_RATE, **span)
    monkeypatch.setattr(audio, "_is_mono_float", lambda frame, sr: False)
    slow, _ = load_audio(media["main"], sr=AUDIO_RATE, **span)
    assert len(fast) > AUDIO_RATE // 2 and fast.dtype == slow.dtype == np.float32
    assert np.array_equal(fast, slow)
