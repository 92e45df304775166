"""Time values in conversation text, rewritten in one timestamp codec's format (dataset option
``answer_time_format``).

Two kinds of time value are recognised, in every user and assistant turn (the model reads questions and
writes answers in the same format; system turns are left alone):

* **Placeholders with a time map** (the VTimeLLM layout): the record carries
  ``"meta": {"duration": 54.2, "token": {"<s0>": 0.0, "<e0>": 9.4}}`` and its text says
  ``"From <s0> to <e0>."``. Each placeholder that is a key of ``meta.token`` becomes that one time in the
  codec's point form (:meth:`~vidtempo.data.timestamps.TimestampCodec.render_time`): ``relative`` -> ``"00"``,
  ``"17"``; ``seconds`` -> ``"0.0"``, ``"9.4"``. A ``<s1>`` / ``<e1>``-style placeholder missing from the map is
  an error. VTimeLLM's ``meta.token`` times count from the start of its clip (``meta.split``); the dataset adds
  that start, so every time reaching :func:`render_times` is a time in the video file.
* **Intervals written in seconds** (Charades-STA / ActivityNet style): ``[from|between] START[unit]
  (to|-|–|and|until) END unit``, where the unit after END is required (``s``, ``sec``, ``secs``, ``second``,
  ``seconds``) so that ``"2 to 3 people"`` is not read as time. The whole phrase becomes the codec's
  ``render(start, end, duration)``: ``"from 3.2 to 7.5 seconds"`` -> ``"3.2 - 7.5 seconds"`` (``seconds``) or
  ``"from 06 to 14"`` (``relative``, 54.2 s video).

The ``relative`` and ``time_tokens`` codecs need the video's duration (``meta.duration``, or the record's
``duration``).

Example:
    >>> from vidtempo.data.timestamps import CODECS
    >>> render_times("From <s0> to <e0>.", CODECS["relative"], 54.2, {"<s0>": 0.0, "<e0>": 9.4})
    'From 00 to 17.'
    >>> render_times("It happens from 3.2 to 7.5 seconds.", CODECS["relative"], 54.2)
    'It happens from 06 to 14.'
    >>> render_times("Between 2 and 3 people, 3.2s - 7.5s in.", CODECS["seconds"], None)
    'Between 2 and 3 people, 3.2 - 7.5 seconds in.'
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vidtempo.data.timestamps import TimestampCodec

_NUM = r"(\d+(?:\.\d+)?)"
_UNIT = r"(?:s|sec|secs|second|seconds)\b"
INTERVAL_RE = re.compile(
    r"(?:\b(?:from|between)\s+)?" + _NUM + r"\s*(?:" + _UNIT + r")?\s*(?:-|–|—|\bto\b|\band\b|\buntil\b)\s*"
    + _NUM + r"\s*" + _UNIT,
    re.IGNORECASE,
)
PLACEHOLDER_RE = re.compile(r"<[se]\d+>")  # VTimeLLM's start / end placeholders


class TimeValueError(ValueError):
    """A time placeholder without a value, or a codec that cannot render without the duration."""


def render_times(
    text: str, codec: TimestampCodec, duration: float | None, values: Mapping[str, float] | None = None,
    start: float = 0.0,
) -> str:  # fmt: skip
    """``text`` with its time placeholders and seconds intervals written in ``codec``'s format (module doc).

    Every time (in the text and in ``values``) is in seconds from the start of the video file, like the frame
    timestamps the model sees. ``start`` and ``duration`` are the clip's start and length (0 and the video's
    length for a whole video): a clip-relative codec (``relative``) writes ``(t - start) / duration``, the others
    ``t``.

    Raises:
        TimeValueError: a ``<sN>`` / ``<eN>`` placeholder has no value in ``values``, or the codec needs the
            duration and ``duration`` is None.
    """
    shift = start if codec.clip_relative else 0.0

    def interval(m: re.Match) -> str:
        return codec.render(float(m.group(1)) - shift, float(m.group(2)) - shift, duration)

    # intervals first, on the text as written: a rendered placeholder is never read again as an interval
    text = INTERVAL_RE.sub(interval, text)
    for name, value in (values or {}).items():
        if name in text:
            text = text.replace(name, codec.render_time(float(value) - shift, duration))
    left = PLACEHOLDER_RE.findall(text)
    if left:
        raise TimeValueError(f"placeholder {left[0]} has no time in meta.token (keys: {sorted(values or {})})")
    return text


def has_time_placeholders(text: str, values: Mapping[str, float] | None) -> bool:
    """Whether ``text`` holds a placeholder of ``values`` or a ``<sN>`` / ``<eN>`` one."""
    return bool(PLACEHOLDER_RE.search(text)) or any(name in text for name in values or {})
