"""Timestamp codecs: how time is written in prompts and answers, and how it is read back.

Every codec renders an interval for an answer (``render(start, end, duration)``), parses the first
interval out of free text (``parse(text, duration)``, or every one with ``parse_all``) and may describe the
sampled frames in the prompt (``describe_frames``). Formats, with the systems that use them:

* ``seconds``: ``"12.4 - 17.0 seconds"`` (TimeChat answer format).
* ``relative``: VTimeLLM two-digit relative indices ``"from 05 to 23"``; ``idx = min(round(t / duration * 100),
  99)`` and back ``t = idx / 100 * duration`` (huangb23/VTimeLLM ``train/dataset.py``, ``eval/eval.py``).
* ``frame_time``: per-frame labels ``"Time 1.5s:"`` (VideoLLaMA3 style), answers ``"from 1.5s to 3.0s"``.
* ``llava_video``: LLaVA-Video time instruction ("The video lasts for X seconds, and N frames are uniformly
  sampled from it. These frames are located at ...") with answers in seconds, two decimals.
* ``time_tokens``: one special token per time bin, ``"from <t_5> to <t_23>"``: the clip is cut into N equal bins
  (default 100), ``idx = min(floor(t / duration * N), N - 1)``, read back as the bin's centre
  ``t = (idx + 0.5) / N * duration``. The tokenizer must hold ``<t_0>`` .. ``<t_{N-1}>`` as single tokens
  (recipe ``tokenizer: {..., time_tokens: N}``, ``vidtempo.models.tokenizers``).

Example:
    >>> codec = CODECS["relative"]
    >>> codec.render(9.4, 20.0, duration=54.2)
    'from 17 to 37'
    >>> codec.parse("It happens from 17 to 37.", duration=54.2)
    (9.214, 20.054)
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

_NUM = r"(\d+(?:\.\d+)?)"
_UNIT = r"\s*(?:s\b|sec\b|secs\b|second\b|seconds\b)?"
_SECONDS_RE = re.compile(_NUM + _UNIT + r"\s*(?:-|–|—|~|to|and|until)\s*" + _NUM + _UNIT, re.IGNORECASE)
_RELATIVE_RE = re.compile(r"\b(\d{2})\s*(?:to|and|-)\s*(\d{2})\b", re.IGNORECASE)
_TIME_TOKEN_RE = re.compile(r"<t_(\d+)>\s*(?:-|–|—|~|to|and|until)?\s*<t_(\d+)>", re.IGNORECASE)
_FRAME_LABEL_RE = re.compile(r"Time\s+" + _NUM + r"s:", re.IGNORECASE)
_INSTRUCTION_RE = re.compile(
    r"The video lasts for " + _NUM + r" seconds, and (\d+) frames are uniformly sampled from it\. "
    r"These frames are located at ([\d.s,\s]+?)\.\s*Please",
)


class TimestampParseError(ValueError):
    """No timestamp in the expected format was found in a text."""


class TimestampCodec(ABC):
    """Renders intervals into text and parses them back (subclass for a new format)."""

    name: str = ""
    clip_relative: bool = False  # times are written as a fraction of the clip's span (render's duration)

    @abstractmethod
    def render(self, start: float, end: float, duration: float | None = None) -> str:
        """Text for the interval ``[start, end]`` seconds of a ``duration``-second video."""

    @abstractmethod
    def parse_all(self, text: str, duration: float | None = None) -> list[tuple[float, float]]:
        """Every interval in ``text``, in seconds, in order of appearance (empty list if none)."""

    def parse(self, text: str, duration: float | None = None) -> tuple[float, float]:
        """The first interval in ``text`` in seconds, clipped to ``[0, duration]`` when ``duration`` is given.

        Raises:
            TimestampParseError: no interval in this codec's format.
        """
        found = self.parse_all(text, duration)
        if not found:
            raise TimestampParseError(f"no {self.name} interval found in {text[:200]!r}")
        return found[0]

    def try_parse(self, text: str, duration: float | None = None) -> tuple[float, float] | None:
        """Like :meth:`parse` but returns None when nothing parses."""
        found = self.parse_all(text, duration)
        return found[0] if found else None

    def describe_frames(self, timestamps: Sequence[float], duration: float) -> str:
        """Prompt text telling the model when the sampled frames were taken ("" = this format has none)."""
        return ""

    def render_time(self, t: float, duration: float | None = None) -> str:
        """One time point in this format, as it appears inside :meth:`render`'s interval (for time
        placeholders in text, ``vidtempo.data.answer_times``); by default the seconds with one decimal."""
        return f"{t:.1f}"


def _clip(value: float, duration: float | None) -> float:
    return value if duration is None else min(max(value, 0.0), float(duration))


class SecondsCodec(TimestampCodec):
    """Absolute seconds: ``"12.4 - 17.0 seconds"``.

    ``parse`` also reads ``"from 12.4s to 17.0s"``, ``"12.4-17.0"``, ``"between 12 and 17 seconds"``.

    Example:
        >>> SecondsCodec().render(12.44, 17.0)
        '12.4 - 17.0 seconds'
        >>> SecondsCodec().parse("from 12.4s to 17.0s")
        (12.4, 17.0)
    """

    name = "seconds"

    def __init__(self, decimals: int = 1) -> None:
        self.decimals = decimals

    def _fmt(self, t: float) -> str:
        return f"{t:.{self.decimals}f}"

    def render(self, start: float, end: float, duration: float | None = None) -> str:
        return f"{self._fmt(start)} - {self._fmt(end)} seconds"

    def render_time(self, t: float, duration: float | None = None) -> str:
        return self._fmt(t)

    def parse_all(self, text: str, duration: float | None = None) -> list[tuple[float, float]]:
        return [(_clip(float(a), duration), _clip(float(b), duration)) for a, b in _SECONDS_RE.findall(text)]

    def describe_frames(self, timestamps: Sequence[float], duration: float) -> str:
        times = ", ".join(self._fmt(t) for t in timestamps)
        return f"The video contains {len(timestamps)} frames sampled at {times} seconds."


class RelativeIndexCodec(TimestampCodec):
    """VTimeLLM relative indices 00-99: ``"from 05 to 23"`` (needs the video duration).

    Example:
        >>> RelativeIndexCodec().render(0.0, 60.0, duration=60.0)
        'from 00 to 99'
    """

    name = "relative"
    clip_relative = True

    @staticmethod
    def to_index(t: float, duration: float) -> int:
        """``min(round(t / duration * 100), 99)``, clipped at 0."""
        if not duration or duration <= 0:
            raise ValueError(f"relative timestamps need a positive duration, got {duration}")
        return max(0, min(int(round(t / duration * 100)), 99))

    def render(self, start: float, end: float, duration: float | None = None) -> str:
        if duration is None:
            raise ValueError("the relative codec needs the video duration to render")
        return f"from {self.to_index(start, duration):02d} to {self.to_index(end, duration):02d}"

    def render_time(self, t: float, duration: float | None = None) -> str:
        if duration is None:
            raise ValueError("the relative codec needs the video duration to render")
        return f"{self.to_index(t, duration):02d}"

    def parse_all(self, text: str, duration: float | None = None) -> list[tuple[float, float]]:
        if duration is None:
            raise ValueError("the relative codec needs the video duration to parse")
        return [
            (round(int(a) / 100 * duration, 6), round(int(b) / 100 * duration, 6))
            for a, b in _RELATIVE_RE.findall(text)
        ]


class FrameTimeCodec(TimestampCodec):
    """Per-frame time labels ``"Time 1.5s:"`` before each frame; answers ``"from 1.5s to 3.0s"``.

    Example:
        >>> codec = FrameTimeCodec()
        >>> codec.frame_labels([0.5, 1.5])
        ['Time 0.5s:', 'Time 1.5s:']
        >>> codec.parse_frame_labels("Time 0.5s: <frame> Time 1.5s: <frame>")
        [0.5, 1.5]
    """

    name = "frame_time"

    def __init__(self, decimals: int = 1) -> None:
        self.decimals = decimals

    def frame_labels(self, timestamps: Sequence[float]) -> list[str]:
        """One label per frame, to put before that frame's tokens."""
        return [f"Time {t:.{self.decimals}f}s:" for t in timestamps]

    @staticmethod
    def parse_frame_labels(text: str) -> list[float]:
        """Frame times from a text holding labels made by :meth:`frame_labels`."""
        return [float(v) for v in _FRAME_LABEL_RE.findall(text)]

    def render(self, start: float, end: float, duration: float | None = None) -> str:
        return f"from {start:.{self.decimals}f}s to {end:.{self.decimals}f}s"

    def render_time(self, t: float, duration: float | None = None) -> str:
        return f"{t:.{self.decimals}f}s"

    def parse_all(self, text: str, duration: float | None = None) -> list[tuple[float, float]]:
        text = _FRAME_LABEL_RE.sub(" ", text)  # labels are not intervals
        return SecondsCodec().parse_all(text, duration)

    def describe_frames(self, timestamps: Sequence[float], duration: float) -> str:
        return " ".join(self.frame_labels(timestamps))


class LLaVAVideoCodec(SecondsCodec):
    """LLaVA-Video time instruction in the prompt, answers in seconds with two decimals.

    Example:
        >>> text = LLaVAVideoCodec().describe_frames([1.0, 3.0], duration=4.0)
        >>> LLaVAVideoCodec.parse_instruction(text)
        (4.0, [1.0, 3.0])
    """

    name = "llava_video"

    def __init__(self) -> None:
        super().__init__(decimals=2)

    def describe_frames(self, timestamps: Sequence[float], duration: float) -> str:
        times = ",".join(f"{t:.2f}s" for t in timestamps)
        return (
            f"The video lasts for {duration:.2f} seconds, and {len(timestamps)} frames are uniformly sampled "
            f"from it. These frames are located at {times}. Please answer the following questions related "
            "to this video."
        )

    @staticmethod
    def parse_instruction(text: str) -> tuple[float, list[float]]:
        """(duration, frame times) from a time instruction.

        Raises:
            TimestampParseError: no instruction in ``text``, or its frame count disagrees with its list.
        """
        match = _INSTRUCTION_RE.search(text)
        if match is None:
            raise TimestampParseError(f"no LLaVA-Video time instruction in {text[:200]!r}")
        times = [float(t.strip().rstrip("s")) for t in match.group(3).split(",") if t.strip()]
        if len(times) != int(match.group(2)):
            raise TimestampParseError(f"instruction says {match.group(2)} frames but lists {len(times)}")
        return float(match.group(1)), times


def time_token(index: int) -> str:
    """The special token of time bin ``index``: ``<t_17>``."""
    return f"<t_{index}>"


def time_token_names(num_bins: int) -> list[str]:
    """``<t_0>`` .. ``<t_{num_bins-1}>``: the tokens a tokenizer adds for the ``time_tokens`` codec."""
    return [time_token(i) for i in range(num_bins)]


class TimeTokenCodec(TimestampCodec):
    """One special token per time bin of the clip: ``"from <t_5> to <t_23>"`` (needs the duration).

    ``num_bins`` equal bins span the clip; a time writes the token of the bin holding it
    (``min(floor(t / duration * num_bins), num_bins - 1)``) and a token reads back as its bin's centre
    (``(idx + 0.5) / num_bins * duration``), so a round trip is off by at most half a bin. Like VTimeLLM's
    relative indices, but each time is ONE token of the vocabulary (``tokenizer.time_tokens``).

    Example:
        >>> codec = TimeTokenCodec(num_bins=100)
        >>> codec.render(9.4, 20.0, duration=54.2)
        'from <t_17> to <t_36>'
        >>> codec.parse("It happens from <t_17> to <t_36>.", duration=54.2)
        (9.485, 19.783)
    """

    name = "time_tokens"
    clip_relative = True

    def __init__(self, num_bins: int = 100) -> None:
        if num_bins < 1:
            raise ValueError(f"time_tokens needs at least one bin, got {num_bins}")
        self.num_bins = num_bins

    def to_index(self, t: float, duration: float | None) -> int:
        """The bin of time ``t`` (clipped to ``[0, num_bins - 1]``)."""
        if not duration or duration <= 0:
            raise ValueError(f"the time_tokens codec needs a positive video duration, got {duration}")
        return max(0, min(int(t / duration * self.num_bins), self.num_bins - 1))

    def render_time(self, t: float, duration: float | None = None) -> str:
        return time_token(self.to_index(t, duration))

    def render(self, start: float, end: float, duration: float | None = None) -> str:
        return f"from {self.render_time(start, duration)} to {self.render_time(end, duration)}"

    def to_seconds(self, index: int, duration: float) -> float:
        """The centre of bin ``index`` in seconds (indices past the last bin read as the last)."""
        return round((min(index, self.num_bins - 1) + 0.5) / self.num_bins * duration, 6)

    def parse_all(self, text: str, duration: float | None = None) -> list[tuple[float, float]]:
        if not duration or duration <= 0:
            raise ValueError(f"the time_tokens codec needs a positive video duration to parse, got {duration}")
        return [(self.to_seconds(int(a), duration), self.to_seconds(int(b), duration))
                for a, b in _TIME_TOKEN_RE.findall(text)]  # fmt: skip


CODECS: dict[str, TimestampCodec] = {
    "seconds": SecondsCodec(),
    "relative": RelativeIndexCodec(),
    "frame_time": FrameTimeCodec(),
    "llava_video": LLaVAVideoCodec(),
    "time_tokens": TimeTokenCodec(),
}
CODECS["vtimellm"] = CODECS["relative"]


def get_codec(codec: str | TimestampCodec) -> TimestampCodec:
    """A codec instance from a name in :data:`CODECS` (or the instance itself)."""
    if isinstance(codec, TimestampCodec):
        return codec
    if codec not in CODECS:
        raise KeyError(f"unknown timestamp codec {codec!r}; valid: {', '.join(sorted(CODECS))}")
    return CODECS[codec]
