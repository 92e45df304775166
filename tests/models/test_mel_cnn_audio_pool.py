"""The from-scratch audio path: MelCNN features on a real decoded audio track, and the pool compressor adding
each frame's audio window to its token."""

from __future__ import annotations

import pytest
import torch

from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.models.encoders.mel_cnn import MelCNN
from vidtempo.models.interfaces import AudioFeatures, CompressorInput


def test_mel_cnn_times_and_mask_follow_the_valid_samples():
    enc = MelCNN(out_dim=8, n_mels=16, channels=(8,))
    out = enc(torch.randn(3, 8000), torch.tensor([8000, 4000, 0]))  # 0.5 s, 0.25 s, no audio track
    assert out.feats.shape[:2] == out.times.shape == out.mask.shape
    step = enc.samples_per_step / 16000  # 20 ms with one stage
    assert torch.allclose(out.times[0, :2], torch.tensor([step / 2, 1.5 * step]))
    assert int(out.mask[0].sum()) == 25 and int(out.mask[1].sum()) == 13 and not out.mask[2].any()
    with pytest.raises(ValueError, match="waveform"):
        enc(torch.randn(8000), torch.tensor([8000]))


def test_mel_cnn_hears_a_real_beep(tmp_path):
    """A real mp4's AAC track (decoded by PyAV): the features around the beep differ from the silence."""
    from vidtempo.data.audio import load_audio
    from vidtempo.data.testing import make_test_video

    path = tmp_path / "beep.mp4"
    make_test_video(path, duration=2.0, fps=8, size=(32, 32), beeps=((1.0, 880.0),))
    wave, sr = load_audio(str(path), sr=16000)
    torch.manual_seed(0)
    out = MelCNN(out_dim=8, n_mels=40)(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    times, feats = out.times[0], out.feats[0]
    at_beep = feats[(times > 1.02) & (times < 1.08)].mean(0)
    silence = feats[(times > 0.3) & (times < 0.6)].mean(0)
    assert (at_beep - silence).abs().max() > 0.05


def _inputs(audio: AudioFeatures | None, frame_mask: torch.Tensor) -> CompressorInput:
    return CompressorInput(feats=torch.zeros(1, 3, 1, 4), frame_mask=frame_mask,
                           timestamps=torch.tensor([[0.0, 1.0, 2.0]]), grid=(1, 1), audio=audio)  # fmt: skip


def test_pool_adds_each_frames_audio_window_to_its_token():
    comp = SpatialPoolCompressor(in_dim=4, stride=1, time_embedding=False, norm=False, audio_dim=2, audio_window=0.5)
    # 4 audio steps per second over 3 s; the step value says which second it belongs to
    times = (torch.arange(12) + 0.5) / 4
    feats = torch.stack([times.floor(), torch.ones(12)], dim=1)[None]  # (1, 12, 2)
    audio = AudioFeatures(feats=feats, times=times[None], mask=torch.ones(1, 12, dtype=torch.bool))
    with torch.no_grad():
        comp.audio_proj[0].weight.fill_(1.0)  # LayerNorm -> identity scale
        comp.audio_proj[1].weight.zero_()
        comp.audio_proj[1].weight[0, 0] = 1.0  # token dim 0 = normalised "which second"
    out = comp(_inputs(audio, torch.ones(1, 3, dtype=torch.bool)))
    values = out.tokens[0, :, 0]
    assert values[0] < values[1] < values[2]  # frame j hears second j
    silent = comp(_inputs(None, torch.ones(1, 3, dtype=torch.bool)))
    assert silent.tokens.abs().sum() == 0  # no audio passed: nothing added
    padded = comp(_inputs(audio, torch.tensor([[True, True, False]])))
    assert padded.tokens.shape[1] == 2 and torch.allclose(padded.tokens[0, 0, 0], values[0])
    assert padded.tokens[0, 1, 0] > values[1]  # the last real frame also hears the seconds after it


def test_pool_without_audio_dim_refuses_audio():
    comp = SpatialPoolCompressor(in_dim=4, stride=1)
    audio = AudioFeatures(torch.zeros(1, 2, 2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="audio_dim"):
        comp(_inputs(audio, torch.ones(1, 3, dtype=torch.bool)))
