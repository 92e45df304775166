"""Inference-time procedures that wrap a trained model without changing its weights.

* :mod:`vidtempo.inference.lvcot`: TDC's training-free Long-Video Chain-of-Thought (describe N segments, then
  answer with the descriptions in ``<think>...</think>``).

Importing this package is cheap; the modules import torch only when they generate.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LVCoTError": "vidtempo.inference.lvcot",
    "LVCoTResult": "vidtempo.inference.lvcot",
    "LVCoTSettings": "vidtempo.inference.lvcot",
    "lvcot_prompt": "vidtempo.inference.lvcot",
    "run_lvcot": "vidtempo.inference.lvcot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidtempo.inference' has no attribute {name!r}")


__all__ = sorted(_LAZY)
