"""Per-frame vision encoders and audio encoders.

Importing this package is cheap: the classes live in sub-modules that import ``transformers``/``timm``
only when first accessed.

    - :class:`~vidtempo.models.encoders.hf_vision.SiglipEncoder`, ``ClipEncoder``, ``Dinov2Encoder``:
      transformers vision towers.
    - :class:`~vidtempo.models.encoders.timm_vision.TimmEncoder`: any timm ViT (EVA-CLIP included).
    - :class:`~vidtempo.models.encoders.cnn.FrameCNN`: a small per-frame CNN trained from scratch.
    - :class:`~vidtempo.models.encoders.whisper.WhisperAudioEncoder`: the Whisper encoder on 30-s windows.
    - :mod:`~vidtempo.models.encoders.presets`: ``tiny_*`` and real-size named builders (no download).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SiglipEncoder": "vidtempo.models.encoders.hf_vision",
    "ClipEncoder": "vidtempo.models.encoders.hf_vision",
    "Dinov2Encoder": "vidtempo.models.encoders.hf_vision",
    "TimmEncoder": "vidtempo.models.encoders.timm_vision",
    "FrameCNN": "vidtempo.models.encoders.cnn",
    "WhisperAudioEncoder": "vidtempo.models.encoders.whisper",
    "log_mel_spectrogram": "vidtempo.models.encoders.whisper",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidtempo.models.encoders' has no attribute '{name}'")
