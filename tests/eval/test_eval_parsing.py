"""Interval and option-letter parsing, plus the reference extractors of the official scorers."""

from __future__ import annotations

import pytest

from vidtempo.eval.parsing import (
    egoschema_lmms_exact_match,
    match_option_text,
    mvbench_official_correct,
    option_text,
    parse_choice,
    parse_interval,
    parse_intervals,
    time_to_seconds,
    videomme_official_extract,
)

# ---------------------------------------------------------------- intervals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.3 - 20.5 seconds", (12.3, 20.5)),
        ("from 3.5 to 7 seconds", (3.5, 7.0)),
        ("The event happens from 3.5 to 7 seconds.", (3.5, 7.0)),
        ("between 00:12 and 00:20", (12.0, 20.0)),
        ("01:05 to 01:20", (65.0, 80.0)),
        ("00:00:18 ... 00:00:23", (18.0, 23.0)),
        ("It occurs at 00:01:05.5 - 00:01:10.", (65.5, 70.0)),
        ("3s-7s", (3.0, 7.0)),
        ("12 sec to 20 sec", (12.0, 20.0)),
        ("24.3–30.4", (24.3, 30.4)),  # en dash
        ("24.3 — 30.4", (24.3, 30.4)),  # em dash
        ("0.5 ~ 4", (0.5, 4.0)),
        ("from 2 until 9 seconds", (2.0, 9.0)),
        ("[3.5, 7]", (3.5, 7.0)),
        ("(3.5s, 7.25s)", (3.5, 7.25)),
        ("It starts at 3 seconds and ends at 7 seconds.", (3.0, 7.0)),
        ("Start time: 4.2, end time: 9.9", (4.2, 9.9)),
        ("20.5 - 12.3 seconds", (12.3, 20.5)),  # inverted -> swapped
        ("The person sits down at 9.0 - 9.0", (9.0, 9.0)),  # zero length kept (scores 0)
        ("Qwen2 answers: 3 to 5", (3.0, 5.0)),  # the 2 of "Qwen2" is not a value
        ("In the 30-second clip, from 3.5 to 7.", (3.5, 7.0)),  # "30-second" is not a pair
        ("First 3 - 5 s, then again 8 - 10 s.", (3.0, 5.0)),  # first interval only
        ("Timestamp: 1:02:03 to 1:02:09", (3723.0, 3729.0)),
        ("from 1 to 2.5 minutes", (60.0, 150.0)),  # a trailing unit applies to both values
        ("from 1 min to 90 s", (60.0, 90.0)),
        ("[30 s, 1 min]", (30.0, 60.0)),
    ],
)
def test_parse_interval_phrasings(text, expected) -> None:
    assert parse_interval(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "I cannot find it.",
        "There are 2 people.",
        "The video lasts 30 seconds.",
        "version 1.2.3",
        "Qwen2-VL",
    ],
)
def test_parse_interval_none(text) -> None:
    assert parse_interval(text) is None


def test_parse_intervals_all_in_order() -> None:
    assert parse_intervals("3 - 5 s and again 10 - 8 s") == [(3.0, 5.0), (8.0, 10.0)]
    assert parse_intervals(None) == []


def test_parse_interval_vtimellm_relative_indices() -> None:
    assert parse_interval("from 05 to 20", relative_indices=True, duration=30.0) == pytest.approx((1.5, 6.0))
    assert parse_interval("From 40 and 10.", relative_indices=True) == pytest.approx((0.1, 0.4))
    # only two-digit indices joined by to/and are read in this mode
    assert parse_interval("from 5 to 20", relative_indices=True, duration=30.0) is None
    assert parse_interval("12.3 - 20.5 seconds", relative_indices=True, duration=30.0) is None
    with pytest.raises(ValueError, match="duration"):
        parse_interval("from 05 to 20", relative_indices=True, duration=0.0)


def test_parse_interval_ignores_duration_for_absolute_times() -> None:
    assert parse_interval("from 20 to 50", duration=30.0) == (20.0, 50.0)  # clipping is the metric's job


def test_time_to_seconds() -> None:
    assert time_to_seconds("75") == 75.0
    assert time_to_seconds("1:15") == 75.0
    assert time_to_seconds("00:01:15.5") == 75.5
    with pytest.raises(ValueError):
        time_to_seconds("1:2:3:4")


# ---------------------------------------------------------------- option letters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(B) the man opens the door", "B"),
        ("Answer: C", "C"),
        ("The best answer is D.", "D"),
        ("C. Jade.", "C"),
        ("Answer: C. Jade.", "C"),  # the official regex reads "A" here
        ("D", "D"),
        ("D.", "D"),
        ("b", "B"),
        ("(c)", "C"),
        ("A) the man", "A"),
        ("A: the man", "A"),
        ("A, because the man cooks first.", "A"),
        ("A", "A"),
        ("**B**", "B"),
        ('"C"', "C"),
        ("Best option:(A) the man", "A"),
        ("The correct option is (b).", "B"),
        ("Option B is correct.", "B"),
        ("I would choose C.", "C"),
        ("I'd go with B since the cup is red.", "B"),
        ("I think it's C.", "C"),
        ("The answer is I think B", "B"),
        ("In the video, a man walks away. The correct answer is B.", "B"),
        ("<think>Maybe A. No wait.</think> D", "D"),
        ("answer: b", "B"),
        ("The answer is: (C) the cat", "C"),
        ("Answer:\n\nB", "B"),
        ("Looking at the frames, (C) fits best.", "C"),
        ("The man opens the fridge [B].", "B"),
    ],
)
def test_parse_choice_letters(text, expected) -> None:
    assert parse_choice(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "A man is cooking in the kitchen.",  # the article, not option A
        "A woman and a man talk.",
        "I don't know.",
        "It is either A. or B.",  # two different letters: ambiguous
        "Vitamin C and B",
        "C and D are wrong, so B.",  # three letters: ambiguous rather than a guess
        "The man is cooking.",
        "E. none of the above",  # beyond 4 options
        "The answer is E",
        "(F)",
    ],
)
def test_parse_choice_none(text) -> None:
    assert parse_choice(text) is None


def test_parse_choice_num_options() -> None:
    assert parse_choice("E. none", num_options=5) == "E"
    assert parse_choice("Answer: E", num_options=5) == "E"
    assert parse_choice("Answer: D", num_options=3) is None
    with pytest.raises(ValueError, match="1..26"):
        parse_choice("A", num_options=0)


OPTIONS = ["A. The man is cooking.", "B. The man is sleeping.", "C. The dog.", "D. A man is cooking dinner."]


def test_parse_choice_from_option_text() -> None:
    assert parse_choice("The man is sleeping.", OPTIONS) == "B"
    assert parse_choice("I believe the dog", OPTIONS) == "C"
    # "A man is cooking dinner" contains no other option's text as whole words except D's own
    assert parse_choice("A man is cooking dinner.", OPTIONS) == "D"
    # the article "A" does not make "A man ..." option A; here no option text matches -> None
    assert parse_choice("A man is eating.", OPTIONS) is None
    # a letter beats the option text; the option list fixes the letter range (5 options -> E valid)
    assert parse_choice("B", OPTIONS) == "B"
    assert parse_choice("E", [*OPTIONS, "E. Nothing."]) == "E"
    assert parse_choice("E", OPTIONS) is None


def test_match_option_text_rules() -> None:
    opts = ["A. The man.", "B. The man is cooking."]
    assert match_option_text("the man is cooking", opts) == "B"  # contained option A is discarded
    assert match_option_text("the man", opts) == "A"
    assert match_option_text("the cat and the dog", ["A. the cat", "B. the dog"]) is None  # two matches
    assert match_option_text("13 jars", ["A. 1.", "B. 13."]) == "B"  # whole words: "1" is not in "13"
    assert option_text("(C) Jade.") == "Jade."


# ---------------------------------------------------------------- reference extractors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C. Berries.", "C"),
        ("Answer: C. Jade.", "A"),  # the "A" of "Answer"
        ("The best answer is D.", "D"),
        ("Best answer: C", "B"),  # "Best answer:" is not stripped (missing comma) -> "B" of "Best"
        ("The best option is C", "C"),
        ("d", ""),  # lower case is never read
        ("I am not sure which of these options matches the clip that was shown", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_videomme_official_extract(text, expected) -> None:
    assert videomme_official_extract(text) == expected


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("B) the man opens", "B", True),
        ("b)", "B", True),
        ("C) the man", "B", False),
        ("B.", "B", True),
        ("a man is cooking", "A", True),  # quirk: the article matches option A
        (" B) leading space", "C", True),  # quirk: an empty first token is a substring of anything
        ("(", "D", True),
        ("the man", "A", False),
    ],
)
def test_mvbench_official_correct(pred, gt, expected) -> None:
    assert mvbench_official_correct(pred, gt) is expected


def test_egoschema_lmms_exact_match() -> None:
    opts = ["A. He cooks", "B. He reads.", "C. He sleeps"]
    assert egoschema_lmms_exact_match("B", opts) == 1
    assert egoschema_lmms_exact_match("B.", opts) == -1  # quirk: only the bare letter matches
    assert egoschema_lmms_exact_match("A. He cooks.", opts) == 0  # a period is appended to the option
    assert egoschema_lmms_exact_match("He sleeps.", opts) == 2
    assert egoschema_lmms_exact_match("The answer is B", opts) == -1  # anything chattier is wrong
    assert egoschema_lmms_exact_match(None, opts) == -1
