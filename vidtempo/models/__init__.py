"""Model components: encoders, compressors, projectors, LLM wrappers and the composed ``VideoLLM``.

This layer imports only ``torch``/``transformers``/``timm``/``peft``: never ``vidtempo.training``,
``vidtempo.cli`` or ``lightning``. Sub-modules are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "VideoLLM": "vidtempo.models.video_llm",
    "TrainableParts": "vidtempo.models.video_llm",
    "VisionEncoder": "vidtempo.models.interfaces",
    "AudioEncoder": "vidtempo.models.interfaces",
    "TokenCompressor": "vidtempo.models.interfaces",
    "CompressorInput": "vidtempo.models.interfaces",
    "VideoTokens": "vidtempo.models.interfaces",
    "AudioFeatures": "vidtempo.models.interfaces",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidtempo.models' has no attribute '{name}'")
