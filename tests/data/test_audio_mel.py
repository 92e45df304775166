"""``VideoCollator(audio_mel=N)``: log-mel computed once per clip on the data side, read by ``mel_cnn``."""

from __future__ import annotations

import pytest
import torch

from vidtempo.data.collate import VideoCollator
from vidtempo.data.log_mel import HOP_LENGTH, LOG_MEL_SILENCE, log_mel_spectrogram
from vidtempo.data.samples import ConversationSample
from vidtempo.data.time_order import permute_audio_windows
from vidtempo.eval.controls import ControlledCollator
from vidtempo.models.encoders.mel_cnn import MelCNN


def _samples(video_dir, names: tuple[str, ...]) -> list[ConversationSample]:
    turns = [{"role": "user", "content": "When is the beep?"}, {"role": "assistant", "content": "1 - 2 seconds"}]
    return [ConversationSample(str(video_dir / f"{n}.mp4"), turns, id=n) for n in names]


def test_collator_log_mel_is_the_log_mel_of_its_waveform(tokenizer, video_dir) -> None:
    samples = _samples(video_dir, ("v1", "v3"))  # 3 s and 5 s of audio: the first row is padded
    wave = VideoCollator(tokenizer, num_frames=4, frame_size=32, audio=True)(samples)
    mel = VideoCollator(tokenizer, num_frames=4, frame_size=32, audio=True, audio_mel=40)(samples)
    assert wave.audio.ndim == 2 and mel.audio.shape[:2] == (2, 40)
    assert torch.equal(mel.audio_lengths, wave.audio_lengths)  # still samples
    for i in range(2):
        n = int(wave.audio_lengths[i])
        expected = log_mel_spectrogram(wave.audio[i : i + 1, :n], 40)[0]  # (40, n // 160)
        assert expected.shape[-1] == n // HOP_LENGTH
        assert torch.allclose(mel.audio[i, :, : expected.shape[-1]], expected, atol=1e-5)
    short = int(wave.audio_lengths[0]) // HOP_LENGTH
    assert torch.all(mel.audio[0, :, short:] == mel.audio[0].amin())  # padded with the row's floor


def test_mel_cnn_reads_either_waveform_or_collator_log_mel(tokenizer, video_dir) -> None:
    torch.manual_seed(0)
    enc = MelCNN(out_dim=8, n_mels=40, channels=(8, 16)).eval()
    samples = _samples(video_dir, ("v2", "v2"))
    wave = VideoCollator(tokenizer, num_frames=4, frame_size=32, audio=True)(samples)
    mel = VideoCollator(tokenizer, num_frames=4, frame_size=32, audio=True, audio_mel=40)(samples)
    with torch.no_grad():
        a = enc(wave.audio, wave.audio_lengths)
        b = enc(mel.audio, mel.audio_lengths)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.times, b.times)
    assert torch.allclose(a.feats, b.feats, atol=1e-4)


def test_mel_cnn_names_the_key_on_a_bin_mismatch() -> None:
    enc = MelCNN(out_dim=8, n_mels=40, channels=(8,))
    with pytest.raises(ValueError, match="data.collator.audio_mel to 40"):
        enc(torch.zeros(1, 20, 50), torch.tensor([8000]))


def test_audio_mel_needs_audio(tokenizer) -> None:
    with pytest.raises(ValueError, match="audio_mel needs audio: true"):
        VideoCollator(tokenizer, audio_mel=40)


def test_log_mel_windows_permute_along_time() -> None:
    mel = torch.arange(12.0).view(2, 6)  # (n_mels=2, F=6)
    out = permute_audio_windows(mel, 6, [2, 0, 1])
    assert out.tolist() == [[4.0, 5.0, 0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 6.0, 7.0, 8.0, 9.0]]


def test_controls_on_log_mel_batches(tokenizer, video_dir) -> None:
    collate = VideoCollator(tokenizer, num_frames=4, frame_size=32, audio=True, audio_mel=40, generation=True)
    samples = _samples(video_dir, ("v1", "v3"))
    normal = ControlledCollator(collate, "normal")(samples)
    shuffled = ControlledCollator(collate, "time", seed=0)(samples)
    blind = ControlledCollator(collate, "blind")(samples)
    for i in range(2):
        steps = int(normal.audio_lengths[i]) // HOP_LENGTH
        perm = shuffled.meta[i]["time_permutation"]
        expected = permute_audio_windows(normal.audio[i], steps, perm)  # the windows move with their frames
        assert torch.equal(shuffled.audio[i], expected)
        loudest = [int(a[:, :steps].amax(0).argmax()) * len(perm) // steps for a in (normal.audio[i], expected)]
        assert loudest[1] == perm.index(loudest[0])  # the beep's window is where its frame went
    assert torch.all(blind.audio == LOG_MEL_SILENCE)  # silence, as log-mel
    assert log_mel_spectrogram(torch.zeros(1, 4000), 40).unique().tolist() == [LOG_MEL_SILENCE]


def test_a_waveform_clip_built_elsewhere_keeps_its_length(tokenizer) -> None:
    from vidtempo.data.collate import DecodedVideo

    clip = DecodedVideo(torch.zeros(2, 3, 8, 8), torch.tensor([0.5, 1.5]), torch.ones(3200))  # no audio_length
    mel = DecodedVideo(torch.zeros(2, 3, 8, 8), torch.tensor([0.5, 1.5]), torch.zeros(40, 20), audio_length=3200)
    assert clip.audio_samples() == 3200 and mel.audio_samples() == 3200
    assert DecodedVideo(torch.zeros(1, 3, 8, 8), torch.tensor([0.5]), None).audio_samples() == 0
    audio, lengths = VideoCollator(tokenizer, audio=True)._pad_audio([clip, None])
    assert lengths.tolist() == [3200, 0] and audio.shape == (2, 3200)
