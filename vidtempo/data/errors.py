"""Errors raised by the data layer. Each names the file and the reason."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Base class: a problem with an input file or annotation."""


class VideoDecodeError(DataError):
    """A video cannot be decoded as asked (missing, corrupt, no frames, bad interval).

    Attributes:
        path: the video file.
        reason: what was wrong, in words.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioDecodeError(VideoDecodeError):
    """The audio stream of a file cannot be decoded."""


class AnnotationError(DataError):
    """An annotation file or record is malformed (names the file, the record and the field)."""
