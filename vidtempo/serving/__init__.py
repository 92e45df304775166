"""An OpenAI-compatible video server around a trained checkpoint (``vidtempo serve``, docs/serving.md).

* :mod:`vidtempo.serving.requests`: the request schema and its errors (each names its field);
* :mod:`vidtempo.serving.media`: a request's video made local (path, ``file://``, base64 data URL) and probed;
* :mod:`vidtempo.serving.batcher`: the queue and the one thread that runs the model, batch by batch;
* :mod:`vidtempo.serving.responses`: OpenAI's completion / chunk objects and server-sent events;
* :mod:`vidtempo.serving.app`: the FastAPI routes.

The answers come from :class:`vidtempo.inference.answer.Answerer`, the code ``vidtempo infer`` answers with.
Importing this package is cheap; FastAPI and torch load when the app is built.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Batcher": "vidtempo.serving.batcher",
    "Job": "vidtempo.serving.batcher",
    "RequestError": "vidtempo.serving.requests",
    "ServeLimits": "vidtempo.serving.requests",
    "Service": "vidtempo.serving.app",
    "create_app": "vidtempo.serving.app",
    "parse_chat_request": "vidtempo.serving.requests",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidtempo.serving' has no attribute {name!r}")


__all__ = sorted(_LAZY)
