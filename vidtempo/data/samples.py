"""Typed samples produced by datasets. Datasets never decode: the collator decodes in the workers.

All paths are already resolved against the dataset's ``video_root``. Conversation messages use the
roles ``system`` / ``user`` / ``assistant``; the video goes where the ``<video>`` placeholder stands
(first user turn when absent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VIDEO_PLACEHOLDER = "<video>"


@dataclass
class ConversationSample:
    """One training/eval conversation about one video.

    Attributes:
        video: path of the video file (None for a text-only sample).
        messages: [{"role": ..., "content": ...}, ...].
        audio: separate audio file (None = use the video's own audio track, if any).
        start, end: optional clip bounds in seconds inside the video.
        id: stable identifier (for reports and skip logs).
        meta: anything else (source file, flags such as ``"interval_past_end"``).
    """

    video: str | None
    messages: list[dict[str, str]]
    audio: str | None = None
    start: float | None = None
    end: float | None = None
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroundingSample:
    """A temporal grounding query: when does ``query`` happen in ``video``?"""

    video: str
    query: str
    start: float
    end: float
    duration: float | None = None
    id: str = ""
    flags: tuple[str, ...] = ()


@dataclass
class MultipleChoiceSample:
    """Multiple-choice QA; ``options`` are the option texts in order, ``answer`` the letter."""

    video: str
    question: str
    options: list[str]
    answer: str | None
    task: str = ""
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RetrievalSample:
    """A (video, caption) pair for text-video retrieval. ``meta``: per-video annotations the training
    collator may read (e.g. ``events`` rows for per-frame tag targets)."""

    video: str
    caption: str
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreferenceSample:
    """A preference pair. ``rejected_video`` set = input-side pair (the rejected answer sees its own video).

    ``prompt`` holds the messages up to (not including) the final assistant answer.
    """

    video: str | None
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    rejected_video: str | None = None
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
