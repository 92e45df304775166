"""Answer parsing: time intervals and multiple-choice letters from free model text.

Two families live here:

* vidtempo's own parsers, :func:`parse_interval` and :func:`parse_choice`, used by every "strict" number.
  Their rules are written out in the docstrings and in ``docs/eval.md``.
* Re-implementations of the reference extractors of official scorers (Video-MME, MVBench, EgoSchema in
  lmms-eval), so that an "official" number can be reproduced exactly, quirks included. They are written
  from the published rules (``docs/eval.md``), not copied.

Example:
    >>> parse_interval("The man opens the door from 3.5 to 7 seconds.")
    (3.5, 7.0)
    >>> parse_choice("The best answer is D.")
    'D'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# ----------------------------------------------------------------------------------------------------
# Intervals
# ----------------------------------------------------------------------------------------------------

# A time value: h:mm:ss(.f), m:ss(.f) or a plain number (seconds).
_VALUE = r"(?:\d{1,2}:\d{2}:\d{2}(?:\.\d+)?|\d{1,3}:\d{2}(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
# An optional unit glued to or after a value ("12s", "12 sec", "12 seconds", "2 min", "2 minutes").
_SECONDS_UNIT = r"seconds?|secs?|s"
_MINUTES_UNIT = r"minutes?|mins?"


def _unit(name: str) -> str:
    return rf"(?:\s*(?P<{name}>{_MINUTES_UNIT}|{_SECONDS_UNIT})(?![A-Za-z]))?"


# Connectors between the two bounds.
_CONN = r"\s*(?:-{1,2}|–|—|~|\bto\b|\band\b|\buntil\b|\btill\b|\bthrough\b|\.{2,3}|…)\s*"
_NOT_BEFORE = r"(?<![\w.:])"  # the value is not the tail of a word or of a longer number
_NOT_AFTER = r"(?![\d:]|\.\d)"
_PAIR_RE = re.compile(
    rf"{_NOT_BEFORE}(?P<a>{_VALUE}){_NOT_AFTER}{_unit('ua')}{_CONN}(?P<b>{_VALUE}){_NOT_AFTER}{_unit('ub')}",
    re.IGNORECASE,
)
_BRACKET_RE = re.compile(
    rf"[\[(]\s*(?P<a>{_VALUE}){_unit('ua')}\s*,\s*(?P<b>{_VALUE}){_unit('ub')}\s*[\])]", re.IGNORECASE
)
_KEYWORD_RE = re.compile(
    rf"\b(?:start\w*|begin\w*|from)\b[^\d]{{0,30}}?{_NOT_BEFORE}(?P<a>{_VALUE}){_NOT_AFTER}"
    rf".{{0,60}}?\b(?:end\w*|finish\w*|stop\w*|until|to)\b[^\d]{{0,30}}?"
    rf"{_NOT_BEFORE}(?P<b>{_VALUE}){_NOT_AFTER}",
    re.IGNORECASE | re.DOTALL,
)
# VTimeLLM answers with two-digit relative indices, "from 05 to 20" (``vtimellm/eval/eval.py``).
_RELATIVE_RE = re.compile(r"(?<!\d)(?P<a>\d{2})\s+(?:to|and)\s+(?P<b>\d{2})(?!\d)", re.IGNORECASE)


def time_to_seconds(value: str) -> float:
    """``"75"``, ``"1:15"``, ``"00:01:15.5"`` -> seconds.

    Example:
        >>> time_to_seconds("01:05"), time_to_seconds("1:00:02.5")
        (65.0, 3602.5)
    """
    parts = value.split(":")
    if len(parts) > 3 or any(p == "" for p in parts[:-1]):
        raise ValueError(f"not a time value: {value!r}")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60.0 + float(part)
    return seconds


def _ordered(a: float, b: float) -> tuple[float, float]:
    return (a, b) if a <= b else (b, a)


def _pair_seconds(m: re.Match[str]) -> tuple[float, float]:
    """The two values of a match in seconds, ordered. A minutes unit scales its value by 60; a unit
    written only after the second value applies to both ("1 - 2 minutes")."""
    groups = m.groupdict()
    unit_b = groups.get("ub")
    unit_a = groups.get("ua") or unit_b
    scale = [60.0 if u and re.fullmatch(_MINUTES_UNIT, u, re.IGNORECASE) else 1.0 for u in (unit_a, unit_b)]
    return _ordered(time_to_seconds(m["a"]) * scale[0], time_to_seconds(m["b"]) * scale[1])


def parse_interval(
    text: str | None, *, relative_indices: bool = False, duration: float | None = None, time_tokens: int = 0,
) -> tuple[float, float] | None:
    """The first time interval stated in free text, in seconds; ``None`` when there is none.

    Rules, in order (the first rule that matches wins; within a rule the leftmost match wins):

    1. Two time values joined by a connector: ``"12.3 - 20.5 seconds"``, ``"from 3.5 to 7 seconds"``,
       ``"between 00:12 and 00:20"``, ``"01:05 to 01:20"``, ``"00:00:18 ... 00:00:23"``, ``"3s–7s"``.
       Values are seconds, ``m:ss`` or ``h:mm:ss`` (fractions allowed), or minutes when followed by
       ``min``/``minutes`` (a unit after the second value only applies to both); connectors are
       ``- -- – — ~ to and until till through .. ... …``. Digits inside words (``"Qwen2"``) are not
       values.
    2. A bracketed pair ``"[3.5, 7]"`` / ``"(3.5, 7)"``.
    3. Keyword pair: a value after ``start``/``begin``/``from`` followed by a value after
       ``end``/``finish``/``stop``/``until``/``to`` (``"starts at 3 s and ends at 7 s"``).

    An inverted pair is swapped. A zero-length interval is returned as such (it scores IoU 0).

    With ``relative_indices=True`` only VTimeLLM's form is read: two two-digit indices joined by
    ``to``/``and`` (``"from 05 to 20"``), each meaning ``index / 100`` of the video, converted to seconds
    with ``duration`` (or returned as fractions of the video when ``duration`` is ``None``). ``duration``
    is not used for absolute times: clipping to the video is the metric's job
    (:func:`vidtempo.eval.metrics.grounding_metrics` ``durations=``).

    With ``time_tokens=N`` only time-token pairs are read (``"from <t_5> to <t_23>"``, the ``time_tokens`` codec
    of ``vidtempo.data.timestamps`` with N bins): each token is its bin's centre, ``(i + 0.5) / N * duration``
    seconds; ``duration`` is required.

    Args:
        text: the model's answer (``None`` or empty gives ``None``).
        relative_indices: read VTimeLLM two-digit relative indices instead of seconds.
        duration: video length in seconds, for ``relative_indices`` and ``time_tokens``.
        time_tokens: the number of time-token bins, to read ``<t_i>`` tokens instead of seconds (0 = off).

    Example:
        >>> parse_interval("between 00:12 and 00:20")
        (12.0, 20.0)
        >>> parse_interval("During frames 80 to 20.", relative_indices=True, duration=50.0)
        (10.0, 40.0)
        >>> parse_interval("I cannot tell.") is None
        True
        >>> parse_interval("It is from <t_10> to <t_19>.", time_tokens=100, duration=50.0)
        (5.25, 9.75)
    """
    if not text:
        return None
    if time_tokens:
        from vidtempo.data.timestamps import TimeTokenCodec

        if duration is None or not duration > 0:
            raise ValueError(f"parse_interval: time_tokens needs a duration > 0 seconds, got {duration}")
        found = TimeTokenCodec(int(time_tokens)).try_parse(text, float(duration))
        return None if found is None else _ordered(*found)
    if relative_indices:
        if duration is not None and not duration > 0:
            raise ValueError(f"parse_interval: duration must be > 0 seconds, got {duration}")
        m = _RELATIVE_RE.search(text)
        if m is None:
            return None
        scale = 1.0 if duration is None else float(duration)
        return _ordered(int(m["a"]) / 100.0 * scale, int(m["b"]) / 100.0 * scale)
    for pattern in (_PAIR_RE, _BRACKET_RE, _KEYWORD_RE):
        m = pattern.search(text)
        if m is not None:
            return _pair_seconds(m)
    return None


def parse_intervals(text: str | None) -> list[tuple[float, float]]:
    """Every ``value <connector> value`` interval in the text, in order (rule 1 of :func:`parse_interval`).

    Example:
        >>> parse_intervals("3 - 5 s and again 8 - 10 s")
        [(3.0, 5.0), (8.0, 10.0)]
    """
    if not text:
        return []
    return [_pair_seconds(m) for m in _PAIR_RE.finditer(text)]


# ----------------------------------------------------------------------------------------------------
# Multiple choice (vidtempo rules)
# ----------------------------------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_THINK_RE = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_OPTION_PREFIX_RE = re.compile(r"^\s*\(?([A-Za-z])\s*[.):]\s*")
# An answer cue followed by a letter: "Answer: C", "the best answer is (B)", "Best option:(A".
_CUE_RE = re.compile(
    r"\b(?i:answer|option|choice)\b(?:\s+(?i:is|would\s+be|should\s+be|will\s+be))?\s*[:\-]?\s*(?:\*\*)?"
    r"(?:\(\s*(?P<p>[A-Za-z])\s*\)"  # "(b)"
    r"|\((?P<o>[A-Za-z])(?![A-Za-z])"  # "(B" as after "Best option:("
    r"|(?P<u>[A-Z])(?![A-Za-z'’])(?!(?<=I)\s+[a-z])"  # "C", but not the pronoun in "I think"
    r"|(?P<l>[a-z])(?=[\s.)!]*$))",  # a lowercase letter that ends the answer: "answer: b"
)
_CHOOSE_RE = re.compile(
    r"\bI(?:\s+would|'d)?\s+(?i:choose|pick|select|go\s+with)\s+(?:(?i:option)\s+)?"
    r"\(?(?P<u>[A-Z])\)?(?![A-Za-z'’])"
)
# The answer opens with a letter: "(B) the man", "C. Jade.", "D", "B: ...", "A) ..." (markdown/quotes ok).
_LEADING_RE = re.compile(r"^[\s\"'*`>]*(?:\(\s*(?P<p>[A-Za-z])\s*\)|(?P<u>[A-Z])(?=\s*(?:[.):,;!]|$)))")
_LONE_LOWER_RE = re.compile(r"^[\s\"'*`(]*(?P<l>[a-z])[\s\"'*`).]*$")
_BRACKETED_RE = re.compile(r"[(\[]\s*(?P<u>[A-Z])\s*[)\]]")
_STANDALONE_RE = re.compile(r"(?<![A-Za-z0-9'’\-])(?P<u>[A-Z])(?![A-Za-z0-9'’+\-])")


def _letter_range(options: Sequence[str] | None, num_options: int) -> str:
    n = len(options) if options is not None else num_options
    if not 1 <= n <= len(LETTERS):
        raise ValueError(f"parse_choice: the number of options must be in 1..26, got {n}")
    return LETTERS[:n]


def _is_word(text: str, pos: int) -> bool:
    """``"A"``/``"I"`` at ``pos`` read as English words: followed by a space and a lowercase word."""
    return text[pos] in "AI" and re.match(r"[AI]\s+[a-z]", text[pos:]) is not None


def _cue_letter(text: str) -> str | None:
    for pattern in (_CUE_RE, _CHOOSE_RE):
        for m in pattern.finditer(text):
            groups = m.groupdict()
            letter = groups.get("p") or groups.get("o") or groups.get("u") or groups.get("l")
            if letter is not None:
                return letter.upper()
    return None


def _leading_letter(text: str) -> str | None:
    m = _LEADING_RE.match(text)
    if m is not None:
        return (m["p"] or m["u"]).upper()
    m = _LONE_LOWER_RE.match(text)
    return m["l"].upper() if m is not None else None


def _scan_letter(text: str, valid: str) -> str | None:
    """A bracketed letter, else a unique standalone capital letter (the article "A" excluded)."""
    for m in _BRACKETED_RE.finditer(text):
        if m["u"] in valid:
            return m["u"]
    found = {
        m["u"] for m in _STANDALONE_RE.finditer(text) if m["u"] in valid and not _is_word(text, m.start())
    }
    return found.pop() if len(found) == 1 else None


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def option_text(option: str) -> str:
    """The option without its letter prefix: ``"A. The man is cooking."`` -> ``"The man is cooking."``."""
    return _OPTION_PREFIX_RE.sub("", option, count=1).strip()


def match_option_text(text: str, options: Sequence[str]) -> str | None:
    """Letter of the one option whose text appears (as whole words) in ``text``; ``None`` if 0 or >= 2.

    An option whose text is contained in another matching option's text is discarded first, so
    ``"the man is cooking"`` matches "The man is cooking." and not also "The man.".

    Example:
        >>> match_option_text("I think the dog runs.", ["A. The cat sleeps.", "B. The dog runs."])
        'B'
    """
    norm = f" {_normalize(text)} "
    bodies = [_normalize(option_text(o)) for o in options]
    hits = [i for i, b in enumerate(bodies) if b and f" {b} " in norm]
    hits = [
        i for i in hits if not any(j != i and bodies[i] != bodies[j] and bodies[i] in bodies[j] for j in hits)
    ]
    return LETTERS[hits[0]] if len(hits) == 1 else None


def parse_choice(text: str | None, options: Sequence[str] | None = None, num_options: int = 4) -> str | None:
    """The option letter a free-text answer picks, or ``None``.

    Rules, in order; a letter outside the first ``num_options`` (``len(options)`` when options are given)
    found by rules 1-2 makes the answer invalid (``None``), it does not fall through:

    1. An answer cue: ``"Answer: C"``, ``"The best answer is D."``, ``"the correct option is (b)"``,
       ``"Best option:(A"``, ``"I would choose B"``, ``"answer: b"`` (first cue in the text wins; a
       lowercase letter after a cue counts only in parentheses or at the very end).
    2. The answer opens with a letter: ``"(B) the man..."``, ``"C. Jade."``, ``"D"``, ``"B: ..."``,
       ``"A) ..."``, or a lone lowercase letter ``"b"``.
    3. A bracketed letter anywhere ``"(C)"`` / ``"[C]"``, else exactly one distinct standalone capital
       letter in the text (``"I'd go with B since..."``); two different ones are ambiguous -> ``None``.
    4. With ``options``: the single option whose text appears in the answer.

    The article rule: a capital ``"A"`` followed by a space and a lowercase word (``"A man is cooking."``)
    is the English article, never option A. ``"A"`` counts only when formatted as an option (``"A."``,
    ``"A)"``, ``"(A)"``, ``"A:"``, ``"A,"``), after a cue (``"Answer: A"``), or alone. The pronoun
    ``"I"`` is likewise ignored by rule 3 when followed by a lowercase word.

    Args:
        text: the model's answer.
        options: option strings, e.g. ``["A. The man is cooking.", ...]`` (prefix optional).
        num_options: number of options when ``options`` is not given.

    Example:
        >>> parse_choice("(B) the man opens the door")
        'B'
        >>> parse_choice("A man is cooking.", ["A. A dog.", "B. A man is cooking."])
        'B'
        >>> parse_choice("Answer: E", num_options=4) is None
        True
    """
    valid = _letter_range(options, num_options)
    if not text:
        return None
    text = _THINK_RE.sub(" ", text).strip()
    for rule in (_cue_letter, _leading_letter):
        letter = rule(text)
        if letter is not None:
            return letter if letter in valid else None
    letter = _scan_letter(text, valid)
    if letter is not None:
        return letter
    if options:
        return match_option_text(text, options)
    return None


# ----------------------------------------------------------------------------------------------------
# Reference extractors of official scorers (reproduced rules, quirks included)
# ----------------------------------------------------------------------------------------------------

# BradyFU/Video-MME evaluation/eval_your_results.py::extract_characters_regex. The list in the original
# misses two commas, so "The best option is" + "The correct option is" and "Best answer:" + "Best option:"
# are single concatenated strings that almost never occur; we keep that behaviour.
VIDEOMME_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
)


def videomme_official_extract(text: str | None) -> str:
    """Video-MME's official extraction: ``""`` means unanswered (dropped from the official denominator).

    Strip surrounding whitespace, delete the prefixes above, then take the first capital A-D anywhere
    (so ``"Answer: C. Jade."`` -> ``"A"``, the "A" of "Answer"), ``""`` when there is none. The original
    also returns ``""`` for "more than 10 words and no A-D", which the last rule already covers.

    Example:
        >>> videomme_official_extract("Answer: C. Jade."), videomme_official_extract("The best answer is D.")
        ('A', 'D')
    """
    s = (text or "").strip()
    for prefix in VIDEOMME_PREFIXES:
        s = s.replace(prefix, "")
    m = re.search(r"[ABCD]", s)
    if m is None:
        return ""
    return m.group(0)


def mvbench_official_correct(text: str | None, answer: str) -> bool:
    """MVBench's ``check_ans`` rule (OpenGVLab/Ask-Anything ``video_chat2/mvbench.ipynb``).

    The ground truth is rendered ``"(X) text"``, the answer was primed with ``"Best option:("``. The first
    space-separated token of the lower-cased prediction, with dots removed, must be a substring of
    ``"(x)"``, or ``"(x)"`` a substring of it. Quirks kept: an empty first token (an answer that starts
    with a space or is empty) and a bare ``"("`` count as correct, and ``"a man..."`` matches option A.

    Args:
        text: the generated continuation after the priming.
        answer: the ground-truth letter.

    Example:
        >>> mvbench_official_correct("B) the man", "B"), mvbench_official_correct("C) the man", "B")
        (True, False)
    """
    gt_option = f"({answer.strip().lower()})"
    pred_option = (text or "").lower().split(" ")[0]
    return pred_option.replace(".", "") in gt_option or gt_option in pred_option


def egoschema_lmms_exact_match(text: str | None, options: Sequence[str]) -> int:
    """lmms-eval EgoSchema generation scoring: exact match to an option, else -1 (counted wrong).

    The prediction must equal a full option string (with a final period added when missing), the option
    sentence after ``"X. "``, or the bare letter ``"C"`` (``"C."`` does not match: the letter is taken
    from the option with its period already split off). Written from the rule in
    ``lmms_eval/tasks/egoschema/utils.py::egoschema_process_results_generation``.

    Example:
        >>> egoschema_lmms_exact_match("C", ["A. x.", "B. y.", "C. z."])
        2
        >>> egoschema_lmms_exact_match("C) z", ["A. x.", "B. y.", "C. z."])
        -1
    """
    pred = text or ""
    full = [o if o.endswith(".") else o + "." for o in options]
    sentences = [o.split(". ", 1)[1] if ". " in o else o for o in full]
    letters = [o.split(". ", 1)[0] if ". " in o else o for o in full]
    for candidates in (full, sentences):
        if pred in candidates:
            return candidates.index(pred)
    for i, letter in enumerate(letters):
        if pred in (letter, letter.replace(".", "")):
            return i
    return -1
