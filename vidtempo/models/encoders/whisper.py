"""Whisper's encoder as an :class:`AudioEncoder`, with its log-mel front end in torch (batched, any device).

Whisper's front end (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision";
the same numbers as transformers' ``WhisperFeatureExtractor``): 16 kHz mono, 25 ms Hann window
(n_fft = 400), 10 ms hop (160 samples), 80 (128 for large-v3) Slaney mel bins over 0-8 kHz, power
spectrum, ``log10(max(mel, 1e-10))``, clamp to ``max - 8``, then ``(x + 4) / 4``. The encoder reads one
30-s window (3000 mel frames) and its stride-2 conv halves that to 1500 steps, one per 20 ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vidtempo.data.log_mel import HOP_LENGTH, SAMPLE_RATE, log_mel_spectrogram
from vidtempo.models.encoders.hf_vision import (
    build_hf_config,
    check_same_arch,
    check_weights_dir,
    meta_buffers,
)
from vidtempo.models.interfaces import AudioEncoder, AudioFeatures

ENCODER_PREFIXES = ("model.encoder.", "encoder.", "")  # WhisperForConditionalGeneration, WhisperModel, ours


def encoder_key_map(checkpoint_keys: list[str], probe: str = "conv1.weight") -> dict[str, str]:
    """Checkpoint key -> encoder key for the encoder's tensors, under the first of :data:`ENCODER_PREFIXES` whose
    ``prefix + probe`` key exists (the decoder and the projection are left out: never read).

    Raises:
        ValueError: no ``probe`` tensor under any prefix.

    Example:
        >>> encoder_key_map(["model.encoder.conv1.weight", "model.decoder.embed_tokens.weight"])
        {'model.encoder.conv1.weight': 'conv1.weight'}
    """
    keys = set(checkpoint_keys)
    prefix = next((p for p in ENCODER_PREFIXES if p + probe in keys), None)
    if prefix is None:
        raise ValueError(f"no '{probe}' weight under any of the prefixes {list(ENCODER_PREFIXES)}")
    if prefix:
        return {k: k[len(prefix) :] for k in checkpoint_keys if k.startswith(prefix)}
    return {k: k for k in checkpoint_keys if not k.startswith(("decoder.", "model.", "proj_out."))}


class WhisperAudioEncoder(AudioEncoder):
    """transformers' ``WhisperEncoder`` over consecutive 30-s windows, with timestamps and a validity mask.

    Long audio is split into windows of ``max_source_positions * 2`` mel frames (30 s for every released
    Whisper), each window is encoded on its own and the outputs are concatenated. Step ``i`` of window
    ``k`` is centred at ``k * 30 + (i + 0.5) * 0.02`` s. Steps that start at or past a row's length are
    masked out; windows holding no valid sample (e.g. a video with no audio track, length 0) are not run
    and give zero features. The output is trimmed to the steps of the longest row.

    Args:
        config: keyword arguments for ``WhisperConfig`` (override those read from ``name_or_path``).
        name_or_path: a local directory whose config.json gives the architecture (no weights are read).

    Example:
        >>> import torch
        >>> enc = WhisperAudioEncoder({"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
        ...     "encoder_ffn_dim": 32, "max_source_positions": 50, "vocab_size": 8, "pad_token_id": 0,
        ...     "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1})
        >>> out = enc(torch.randn(2, 24000), torch.tensor([24000, 8000]))
        >>> tuple(out.feats.shape), out.mask.sum(1).tolist()
        ((2, 75, 16), [75, 25])
    """

    arch_keys = (
        "d_model",
        "encoder_layers",
        "encoder_attention_heads",
        "num_mel_bins",
        "max_source_positions",
    )

    def __init__(
        self, config: Mapping[str, Any] | None = None, name_or_path: str | Path | None = None
    ) -> None:
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        cfg = build_hf_config(WhisperConfig, config, name_or_path, "WhisperAudioEncoder")
        self.encoder = WhisperEncoder(cfg)
        self.name_or_path = None if name_or_path is None else str(name_or_path)
        self.out_dim = int(cfg.d_model)
        self.n_mels = int(cfg.num_mel_bins)
        self.sample_rate = SAMPLE_RATE
        stride = self.encoder.conv1.stride[0] * self.encoder.conv2.stride[0]  # 1 * 2
        self.steps_per_window = int(cfg.max_source_positions)  # 1500
        self.window_samples = self.steps_per_window * stride * HOP_LENGTH  # 480000 = 30 s
        self.samples_per_step = stride * HOP_LENGTH  # 320 = 20 ms
        self.step_seconds = self.samples_per_step / SAMPLE_RATE

    def _check_inputs(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(
                f"WhisperAudioEncoder expects waveform (B, S), got shape {tuple(waveform.shape)}"
                + (" (log-mel from data.collator.audio_mel: remove that key for Whisper, which reads 30-s "
                   "waveform windows)" if waveform.dim() == 3 else "")
            )
        lengths = torch.as_tensor(lengths, device=waveform.device)
        if lengths.shape != (waveform.shape[0],):
            raise ValueError(
                f"WhisperAudioEncoder: lengths must have shape ({waveform.shape[0]},), got {tuple(lengths.shape)}"
            )
        return lengths.long().clamp(0, waveform.shape[1])

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> AudioFeatures:
        """waveform (B, S) at 16 kHz, lengths (B,) -> feats (B, A, D), times (B, A) s, mask (B, A)."""
        lengths = self._check_inputs(waveform, lengths)
        bsz, device, win = waveform.shape[0], waveform.device, self.window_samples
        max_len = int(lengths.max()) if bsz else 0
        n_win = max(1, math.ceil(max_len / win))
        wave = waveform[:, : n_win * win].float()
        wave = torch.nn.functional.pad(wave, (0, n_win * win - wave.shape[1]))  # (B, n_win * W)
        wave = wave * (torch.arange(n_win * win, device=device)[None] < lengths[:, None])  # zero the padding
        windows = wave.view(bsz * n_win, win)  # (B * n_win, W)
        has_audio = (torch.arange(n_win, device=device)[None] * win < lengths[:, None]).reshape(-1)
        dtype = self.encoder.conv1.weight.dtype
        feats = torch.zeros(bsz * n_win, self.steps_per_window, self.out_dim, device=device, dtype=dtype)
        if bool(has_audio.any()):
            mel = log_mel_spectrogram(windows[has_audio], self.n_mels)  # (K, n_mels, 2 * steps)
            feats[has_audio] = self.encoder(mel.to(dtype)).last_hidden_state  # (K, steps, D)
        num_steps = max(1, math.ceil(max_len / self.samples_per_step))
        feats = feats.view(bsz, n_win * self.steps_per_window, self.out_dim)[:, :num_steps]  # (B, A, D)
        step = torch.arange(num_steps, device=device)
        window, within = step // self.steps_per_window, step % self.steps_per_window
        times = window * (win / SAMPLE_RATE) + (within + 0.5) * self.step_seconds  # (A,)
        mask = step[None] * self.samples_per_step < lengths[:, None]  # (B, A)
        return AudioFeatures(feats=feats, times=times.float()[None].expand(bsz, -1).contiguous(), mask=mask)

    # ------------------------------------------------------------------ weights
    # built on the meta device by ``build_video_llm`` when named under ``weights:`` (``empty_init``)
    lean_load = True

    def load_pretrained(self, path_or_dir: str | Path | None = None, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> WhisperAudioEncoder:  # fmt: skip
        """Load the encoder weights from a local Whisper directory (a full ``WhisperForConditionalGeneration``
        or ``WhisperModel`` snapshot, or this encoder's ``save_pretrained`` output; default ``name_or_path``),
        tensor by tensor into ``dtype`` (default: the parameters' own) on ``device``; the decoder's tensors are
        not read. Strict; returns ``self``."""
        from transformers import WhisperConfig

        from vidtempo.models.weights import checkpoint_files, empty_init, load_weights, open_reader

        source = path_or_dir if path_or_dir is not None else self.name_or_path
        if source is None:
            raise ValueError("WhisperAudioEncoder.load_pretrained needs a path (built from a config only)")
        path = check_weights_dir(source, "WhisperAudioEncoder")
        theirs = WhisperConfig.from_pretrained(str(path), local_files_only=True)
        check_same_arch(self.encoder.config, theirs, self.arch_keys, path, "WhisperAudioEncoder")
        if meta_buffers(self.encoder):  # built under ``torch.device("meta")``: rebuild with real buffers
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            with empty_init():
                self.encoder = WhisperEncoder(self.encoder.config)
        files = checkpoint_files(path)
        reader = open_reader(files)
        try:
            rename = encoder_key_map(reader.keys())
            load_weights(self.encoder, reader, dtype=dtype, device=device, rename=rename.get)
        except ValueError as err:
            raise ValueError(f"{path}: weights do not fit the Whisper encoder: {err}") from None
        finally:
            reader.close()
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write the encoder as a transformers directory (config.json + model.safetensors)."""
        self.encoder.save_pretrained(str(path))

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, n_mels={self.n_mels}, window_s={self.window_samples / SAMPLE_RATE:g}"
