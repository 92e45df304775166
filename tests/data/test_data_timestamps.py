"""Timestamp codecs: render -> parse round trips and tolerant parsing."""

from __future__ import annotations

import pytest

from vidtempo.data.timestamps import (
    CODECS,
    FrameTimeCodec,
    LLaVAVideoCodec,
    RelativeIndexCodec,
    SecondsCodec,
    TimestampParseError,
    get_codec,
)

INTERVALS = [(0.0, 3.2), (12.4, 17.0), (0.55, 29.96), (100.0, 143.25)]


@pytest.mark.parametrize("name", ["seconds", "frame_time", "llava_video"])
@pytest.mark.parametrize(("start", "end"), INTERVALS)
def test_absolute_codecs_round_trip(name: str, start: float, end: float) -> None:
    codec = CODECS[name]
    decimals = 2 if name == "llava_video" else 1
    got = codec.parse(f"The event happens {codec.render(start, end, 150.0)}.", 150.0)
    assert got == pytest.approx((round(start, decimals), round(end, decimals)), abs=0.051 / 10 ** (decimals - 1))


@pytest.mark.parametrize("duration", [30.96, 55.15, 600.0])
@pytest.mark.parametrize(("start", "end"), [(0.0, 3.2), (12.4, 17.0), (0.55, 29.96)])
def test_relative_round_trip_within_one_percent(duration: float, start: float, end: float) -> None:
    codec = CODECS["relative"]
    text = codec.render(start, end, duration)
    assert len(text) == len("from 00 to 00")
    s, e = codec.parse(text, duration)
    assert abs(s - start) <= duration / 100 and abs(e - end) <= duration / 100


def test_relative_index_formula() -> None:
    # VTimeLLM: min(round(t / duration * 100), 99), zero padded
    assert RelativeIndexCodec().render(9.4, 54.2, 54.2) == "from 17 to 99"
    assert RelativeIndexCodec().parse("From 05 to 23", 100.0) == (5.0, 23.0)
    with pytest.raises(ValueError, match="duration"):
        RelativeIndexCodec().render(1.0, 2.0)


@pytest.mark.parametrize(
    "text",
    ["12.4 - 17.0 seconds", "from 12.4s to 17.0s", "12.4-17.0", "between 12.4 and 17.0 seconds", "12.4 to 17 sec"],
)
def test_seconds_parse_variants(text: str) -> None:
    assert SecondsCodec().parse(text) == (12.4, 17.0)


def test_parse_clips_to_duration_and_finds_all() -> None:
    codec = SecondsCodec()
    assert codec.parse("5.0 - 40.0 seconds", duration=30.0) == (5.0, 30.0)
    assert codec.parse_all("0.0 - 2.0 seconds, then 3.5 - 6.0 seconds") == [(0.0, 2.0), (3.5, 6.0)]


def test_unparseable_raises_or_returns_none() -> None:
    with pytest.raises(TimestampParseError, match="no seconds interval"):
        SecondsCodec().parse("I do not know.")
    assert CODECS["relative"].try_parse("no idea", 10.0) is None


def test_frame_labels_round_trip_and_do_not_count_as_intervals() -> None:
    codec = FrameTimeCodec()
    labels = codec.frame_labels([0.5, 1.5, 2.5])
    assert labels == ["Time 0.5s:", "Time 1.5s:", "Time 2.5s:"]
    assert codec.parse_frame_labels(" <f> ".join(labels)) == [0.5, 1.5, 2.5]
    assert codec.parse_all(" ".join(labels)) == []
    assert codec.parse(codec.describe_frames([0.5], 3.0) + " Answer: from 1.0s to 2.0s") == (1.0, 2.0)


def test_llava_video_instruction_round_trip() -> None:
    times = [0.25, 0.75, 1.25, 1.75]
    text = LLaVAVideoCodec().describe_frames(times, duration=2.0)
    assert text.startswith("The video lasts for 2.00 seconds, and 4 frames are uniformly sampled from it.")
    assert "These frames are located at 0.25s,0.75s,1.25s,1.75s." in text
    assert LLaVAVideoCodec.parse_instruction(text) == (2.0, times)
    with pytest.raises(TimestampParseError):
        LLaVAVideoCodec.parse_instruction(text.replace("4 frames", "5 frames"))


def test_seconds_describe_frames() -> None:
    assert SecondsCodec().describe_frames([0.5, 1.5], 2.0) == "The video contains 2 frames sampled at 0.5, 1.5 seconds."


def test_get_codec() -> None:
    assert get_codec("vtimellm") is CODECS["relative"]
    codec = SecondsCodec(decimals=2)
    assert get_codec(codec) is codec
    with pytest.raises(KeyError, match="valid"):
        get_codec("iso8601")
