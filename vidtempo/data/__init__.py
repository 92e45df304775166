"""Video/audio decoding, frame sampling, timestamp codecs, dataset formats and collation.

Lightweight at import: decoders and datasets are imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from vidtempo.data.errors import AudioDecodeError, DataError, VideoDecodeError

_LAZY = {
    "load_clip": "vidtempo.data.video",
    "Clip": "vidtempo.data.video",
    "load_audio": "vidtempo.data.audio",
    "AnnotationError": "vidtempo.data.errors",
    "open_video": "vidtempo.data.video",
    "whisper_windows": "vidtempo.data.audio",
    "per_frame_chunks": "vidtempo.data.audio",
    "UniformSampler": "vidtempo.data.sampling",
    "FpsSampler": "vidtempo.data.sampling",
    "CODECS": "vidtempo.data.timestamps",
    "get_codec": "vidtempo.data.timestamps",
    "ConversationDataset": "vidtempo.data.datasets",
    "CharadesSTADataset": "vidtempo.data.datasets",
    "ActivityNetCaptionsDataset": "vidtempo.data.datasets",
    "MSRVTTDataset": "vidtempo.data.datasets",
    "MultipleChoiceDataset": "vidtempo.data.datasets",
    "PreferenceDataset": "vidtempo.data.datasets",
}

__all__ = ["AudioDecodeError", "DataError", "VideoDecodeError", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidtempo.data' has no attribute '{name}'")
