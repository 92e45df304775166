"""A small audio encoder trained from scratch: Whisper's log-mel front end, then strided 1-D convolutions.

The audio counterpart of ``FrameCNN``: for tiny recipes that must hear (TempoSynth's beeps) without a
pretrained Whisper. It reads the whole clip at once (no 30-s windows) and emits one feature per
``hop_length * stride`` samples (40 ms with the defaults) with its centre time.

Example:
    >>> import torch
    >>> enc = MelCNN(out_dim=16, n_mels=20, channels=(8, 16))
    >>> out = enc(torch.randn(2, 16000), torch.tensor([16000, 8000]))  # 1 s and 0.5 s of 16 kHz audio
    >>> out.feats.shape, int(out.mask[1].sum())
    (torch.Size([2, 25, 16]), 13)
"""

from __future__ import annotations

import torch
from torch import nn

from vidtempo.data.log_mel import HOP_LENGTH, MIN_SAMPLES, SAMPLE_RATE, log_mel_spectrogram
from vidtempo.models.interfaces import AudioEncoder, AudioFeatures


class MelCNN(AudioEncoder):
    """Log-mel (Whisper's normalisation) -> Conv1d(k=3, stride 2) + GELU stages -> (B, A, out_dim).

    Args:
        out_dim: feature width.
        n_mels: mel bins of the front end.
        channels: widths of the strided conv stages (each halves the time resolution).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, out_dim: int = 64, n_mels: int = 40, channels: tuple[int, ...] | list[int] = (32, 64)) -> None:
        super().__init__()
        self.out_dim, self.n_mels = int(out_dim), int(n_mels)
        layers: list[nn.Module] = []
        width = self.n_mels
        for c in channels:
            layers += [nn.Conv1d(width, c, kernel_size=3, stride=2, padding=1), nn.GELU()]
            width = c
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Conv1d(width, self.out_dim, kernel_size=1)
        self.stride = 2 ** len(channels)
        self.samples_per_step = HOP_LENGTH * self.stride

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> AudioFeatures:
        """waveform (B, S) at 16 kHz, or its log-mel (B, n_mels, F) computed by the collator
        (``data.collator.audio_mel``); lengths (B,) valid samples -> feats (B, A, D), times (B, A) s, mask (B, A)."""
        bsz, device = waveform.shape[0], waveform.device
        mel = self.log_mel(waveform, lengths)  # (B, n_mels, F), one frame per 10 ms
        x = self.proj(self.stages(mel.to(self.proj.weight.dtype)))  # (B, D, A)
        feats = x.transpose(1, 2)  # (B, A, D)
        step = torch.arange(feats.shape[1], device=device)
        times = (step + 0.5) * (self.samples_per_step / SAMPLE_RATE)  # (A,) centre of each step
        mask = step[None] * self.samples_per_step < lengths[:, None]  # (B, A); no audio track: all False
        return AudioFeatures(feats=feats, times=times.float()[None].expand(bsz, -1).contiguous(), mask=mask)

    def log_mel(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The front end: (B, S) waveform -> (B, n_mels, F) log-mel; a (B, n_mels, F) input is already that."""
        if audio.ndim == 3:
            if audio.shape[1] != self.n_mels:
                raise ValueError(f"MelCNN(n_mels={self.n_mels}) got log-mel with {audio.shape[1]} bins: set "
                                 f"data.collator.audio_mel to {self.n_mels}")  # fmt: skip
            return audio.float()
        if audio.ndim != 2:
            raise ValueError(f"MelCNN expects a (B, S) waveform or (B, n_mels, F) log-mel, got shape "
                             f"{tuple(audio.shape)}")  # fmt: skip
        wave = audio.float() * (torch.arange(audio.shape[1], device=audio.device)[None] < lengths[:, None])
        if wave.shape[1] < MIN_SAMPLES:  # the STFT's reflect padding needs more than n_fft / 2 samples
            wave = nn.functional.pad(wave, (0, MIN_SAMPLES - wave.shape[1]))
        return log_mel_spectrogram(wave, self.n_mels)
