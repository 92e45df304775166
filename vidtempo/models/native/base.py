"""Helpers shared by the native backbones. The model contract itself is
:class:`vidtempo.models.interfaces.VideoModel`, which ``VideoLLM`` and the native models subclass.

Example:
    >>> from vidtempo.models.native.base import parts_report
    >>> parts_report({"llm": (10, 2), "projector": (4, 0)})
    'llm 10 (2 trainable), projector 4 (0 trainable)'
"""

from __future__ import annotations


def parts_report(counts: dict[str, tuple[int, int]]) -> str:
    """One line from :meth:`VideoModel.parameter_counts` (logs and error messages)."""
    return ", ".join(f"{part} {total} ({trainable} trainable)" for part, (total, trainable) in counts.items())
