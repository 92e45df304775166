"""Whisper's log-mel front end in torch (batched, any device), shared by the data side and the audio encoders.

The numbers are Whisper's (Radford et al. 2022; the same as transformers' ``WhisperFeatureExtractor``): 16 kHz
mono, 25 ms Hann window (n_fft = 400), 10 ms hop (160 samples), Slaney mel bins over 0-8 kHz, power
spectrum, ``log10(max(mel, 1e-10))``, clamp to ``max - 8``, then ``(x + 4) / 4``. It lives in the data layer
so that a collator can compute it once per clip in its worker (``VideoCollator(audio_mel=...)``) and the
encoders (``whisper``, ``mel_cnn``) can compute it on the fly from the same code.

Example:
    >>> import torch
    >>> log_mel_spectrogram(torch.zeros(2, 16000), n_mels=40).shape
    torch.Size([2, 40, 100])
"""

from __future__ import annotations

import functools

import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
MIN_SAMPLES = N_FFT // 2 + 1  # the STFT's reflect padding needs more than n_fft / 2 samples
LOG_MEL_SILENCE = -1.5  # (log10(1e-10) + 4) / 4: what an all-silent clip gives


@functools.lru_cache(maxsize=8)
def _mel_filters(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) Slaney-normalised, Slaney-scale triangular filters over 0-8 kHz (CPU)."""
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(filters).to(device="cpu", dtype=torch.float32)


def log_mel_spectrogram(
    audio: torch.Tensor,
    n_mels: int = 80,
    *,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """Whisper's normalised log-mel spectrogram of each row.

    Args:
        audio: (B, S) float mono waveforms at ``sample_rate`` (S > n_fft // 2 for the reflect padding).
        n_mels: mel bins (80; 128 for Whisper-large-v3).

    Returns:
        (B, n_mels, S // hop_length) float32 features; the max-8 dynamic-range clamp is per row.

    Example:
        >>> import torch
        >>> log_mel_spectrogram(torch.zeros(2, 16000)).shape
        torch.Size([2, 80, 100])
    """
    if audio.dim() != 2:
        raise ValueError(f"log_mel_spectrogram expects (B, S) audio, got shape {tuple(audio.shape)}")
    audio = audio.float()
    window = torch.hann_window(n_fft, device=audio.device)
    stft = torch.stft(
        audio, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    parts = torch.view_as_real(stft[..., :-1])  # (B, F, frames, 2): Whisper drops the last frame
    power = parts[..., 0].square() + parts[..., 1].square()  # |z|^2 without the slow complex abs
    filters = _mel_filters(n_mels, n_fft, sample_rate).to(audio.device)  # (F, n_mels)
    mel = torch.matmul(filters.T, power)  # (B, n_mels, frames)
    log_spec = mel.clamp(min=1e-10).log10()
    row_max = log_spec.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    log_spec = torch.maximum(log_spec, row_max - 8.0)
    return (log_spec + 4.0) / 4.0
