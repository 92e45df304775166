"""LVCoT: TDC's training-free Long-Video Chain-of-Thought.

A long video is cut into N contiguous, equally long segments. The model describes each segment on its own
(greedy, 128 new tokens, prompt "Describe the video segment in detail."), the N descriptions are joined with
spaces, and the question is asked about the whole video with ``<think>{joined}</think>`` put in front of the
question text. Each segment is sampled with the collator's own frame settings, so LVCoT multiplies the frame
coverage by N (the released code caps every part at 224 frames separately).

N follows the video's duration (released code, ``eval/eval_videomme.py`` / ``eval/eval_mlvu.py``; see
``docs/methods/lvcot.md``): Video-MME: 3 segments from 900 s, 2 from 600 s, none below; MLVU: 2 from
600 s. The thresholds are configurable (``rule``), or N can be fixed (``segments``). One segment = no LVCoT:
the sample is answered directly.

Example:
    >>> s = LVCoTSettings()
    >>> [s.num_segments(d) for d in (599.0, 600.0, 899.9, 900.0)]
    [1, 2, 2, 3]
    >>> segment_spans(0.0, 900.0, 3)
    [(0.0, 300.0), (300.0, 600.0), (600.0, 900.0)]
    >>> lvcot_prompt([{"role": "user", "content": "<video>\\nWhat happens?"}], ["A cat.", "A dog."])
    [{'role': 'user', 'content': '<video>\\n<think>A cat. A dog.</think>What happens?'}]
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vidtempo.data.errors import VideoDecodeError
from vidtempo.data.samples import VIDEO_PLACEHOLDER, ConversationSample
from vidtempo.models.interfaces import VideoModel

DESCRIBE_PROMPT = "Describe the video segment in detail."
QUESTION_PROMPT = (
    "Summarize the key information in this video segment that is relevant to answering the question: {question}"
)
PROMPTS: dict[str, str] = {"describe": DESCRIBE_PROMPT, "question": QUESTION_PROMPT}
# (minimum duration in seconds, number of segments), longest first. The released code counts 1-fps frames,
# i.e. seconds. [CODE eval/eval_videomme.py, eval/eval_mlvu.py]
RULES: dict[str, tuple[tuple[float, int], ...]] = {
    "videomme": ((900.0, 3), (600.0, 2)),
    "mlvu": ((600.0, 2),),
}
SETTING_KEYS = ("enabled", "segments", "rule", "prompt", "max_new_tokens")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class LVCoTError(ValueError):
    """Bad LVCoT settings (the message names the key and what was expected)."""


def _rule(value: Any, where: str) -> tuple[tuple[float, int], ...]:
    """A rule preset name or ``[[min_seconds, segments], ...]`` -> pairs sorted longest first."""
    if isinstance(value, str):
        if value not in RULES:
            raise LVCoTError(f"{where}.rule: unknown preset {value!r}; valid: {', '.join(RULES)} "
                             "or a list of [min_seconds, segments] pairs")  # fmt: skip
        return RULES[value]
    pairs = []
    for entry in list(value) if isinstance(value, list | tuple) else [None]:
        ok = isinstance(entry, list | tuple) and len(entry) == 2
        if ok:
            seconds, n = entry
            ok = isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0
            ok = ok and isinstance(n, int) and not isinstance(n, bool) and n >= 1
        if not ok:
            raise LVCoTError(f"{where}.rule: expected a preset ({', '.join(RULES)}) or a non-empty list of "
                             f"[min_seconds >= 0, segments >= 1] pairs, got {value!r}")  # fmt: skip
        pairs.append((float(seconds), int(n)))
    if not pairs:
        raise LVCoTError(f"{where}.rule: the list of [min_seconds, segments] pairs is empty")
    return tuple(sorted(pairs, reverse=True))


def _positive(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LVCoTError(f"{key}: expected a positive integer, got {value!r}")
    return value


def _prompt(value: Any, where: str) -> str:
    """A preset name (``describe``, ``question``) or a template whose only placeholder is ``{question}``."""
    if not isinstance(value, str) or not value.strip():
        raise LVCoTError(f"{where}.prompt: expected a non-empty string, got {value!r}")
    template = PROMPTS.get(value, value)
    try:
        names = [n for _, n, _, _ in string.Formatter().parse(template) if n is not None]
    except ValueError as err:
        raise LVCoTError(f"{where}.prompt: malformed template {template!r}: {err}") from err
    bad = [n for n in names if n != "question"]
    if bad:
        raise LVCoTError(f"{where}.prompt: unknown placeholder(s) {bad} in {template!r}; only {{question}}")
    return template


@dataclass(frozen=True)
class LVCoTSettings:
    """How LVCoT cuts a video and describes the segments.

    Attributes:
        segments: fixed number of segments for every video (None = decide by ``rule``).
        rule: (min_seconds, segments) pairs, longest first: the first pair whose threshold the video's
            duration reaches gives N; below every threshold N = 1 (no LVCoT).
        prompt: segment prompt; ``{question}`` is replaced by the question (the last user turn without the
            video placeholder).
        max_new_tokens: length of each segment description (greedy).

    Example:
        >>> LVCoTSettings.from_dict({"rule": "mlvu"}).num_segments(700.0)
        2
        >>> LVCoTSettings.from_dict({"enabled": False}) is None
        True
    """

    segments: int | None = None
    rule: tuple[tuple[float, int], ...] = RULES["videomme"]
    prompt: str = DESCRIBE_PROMPT
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        if self.segments is not None:
            _positive(self.segments, "LVCoTSettings.segments")
        _positive(self.max_new_tokens, "LVCoTSettings.max_new_tokens")
        object.__setattr__(self, "rule", _rule(self.rule, "LVCoTSettings"))
        object.__setattr__(self, "prompt", _prompt(self.prompt, "LVCoTSettings"))

    @classmethod
    def from_dict(cls, node: Any, where: str = "lvcot") -> LVCoTSettings | None:
        """Settings from a config node, or None when LVCoT is off.

        ``node`` may be None/False (off), True (defaults) or a mapping with the keys ``enabled`` (default
        True), ``segments``, ``rule`` (a preset name or pairs), ``prompt`` (``describe``, ``question`` or a
        template) and ``max_new_tokens``. ``where`` prefixes the key in error messages (``eval.lvcot``).
        """
        if node is None or node is False:
            return None
        if node is True:
            return cls()
        if not isinstance(node, Mapping):
            raise LVCoTError(f"{where}: expected true/false or a mapping with keys {', '.join(SETTING_KEYS)}, "
                             f"got {node!r}")  # fmt: skip
        unknown = sorted(set(node) - set(SETTING_KEYS))
        if unknown:
            raise LVCoTError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(SETTING_KEYS)}")
        enabled = node.get("enabled", True)
        if not isinstance(enabled, bool):
            raise LVCoTError(f"{where}.enabled: expected true or false, got {enabled!r}")
        if not enabled:
            return None
        if node.get("segments") is not None and node.get("rule") is not None:
            raise LVCoTError(f"{where}: give either segments (a fixed N) or rule (N by duration), not both")
        kwargs: dict[str, Any] = {}
        if node.get("rule") is not None:
            kwargs["rule"] = _rule(node["rule"], where)
        if node.get("prompt") is not None:
            kwargs["prompt"] = _prompt(node["prompt"], where)
        for key in ("segments", "max_new_tokens"):
            if node.get(key) is not None:
                kwargs[key] = _positive(node[key], f"{where}.{key}")
        return cls(**kwargs)

    def num_segments(self, duration: float) -> int:
        """N for a video (span) of ``duration`` seconds; 1 means: answer directly."""
        if self.segments is not None:
            return self.segments
        return next((n for seconds, n in self.rule if duration >= seconds), 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (for report.json and the resume fingerprint)."""
        return {"segments": self.segments, "rule": None if self.segments is not None else
                [list(p) for p in self.rule], "prompt": self.prompt,
                "max_new_tokens": self.max_new_tokens}  # fmt: skip


@dataclass
class LVCoTResult:
    """What LVCoT did for one sample. Unpacks as ``messages, summaries = result``.

    Attributes:
        messages: the conversation to answer (with ``<think>...</think>``; the original one when LVCoT was
            not applied).
        summaries: the N segment descriptions in time order ([] when not applied).
        segments: (start, end) seconds of each segment in the video ([] when not applied).
        duration: seconds of the span that was split (None when it could not be probed).
        skipped: why LVCoT could not run (a decode error), else None.

    Example:
        >>> messages, summaries = LVCoTResult([{"role": "user", "content": "<video>\\nWhy?"}], ["a", "b"])
        >>> summaries
        ['a', 'b']
    """

    messages: list[dict[str, str]]
    summaries: list[str] = field(default_factory=list)
    segments: list[tuple[float, float]] = field(default_factory=list)
    duration: float | None = None
    skipped: str | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.messages
        yield self.summaries

    def record(self) -> dict[str, Any]:
        """JSON-ready summary of this result (the ``lvcot`` field of a generations.jsonl row)."""
        return {"duration": self.duration, "segments": [list(s) for s in self.segments],
                "summaries": list(self.summaries), "skipped": self.skipped}  # fmt: skip


# ------------------------------------------------------------------------------------------- prompts
def segment_spans(start: float, end: float, n: int) -> list[tuple[float, float]]:
    """``n`` equal contiguous ``(start, end)`` spans covering ``[start, end)``."""
    if n < 1 or end <= start:
        raise ValueError(f"cannot split [{start}, {end}) into {n} segments")
    step = (end - start) / n
    bounds = [start + k * step for k in range(n)] + [end]
    return [(bounds[k], bounds[k + 1]) for k in range(n)]


def _last_user(messages: Sequence[Mapping[str, str]]) -> int:
    for k in range(len(messages) - 1, -1, -1):
        if messages[k]["role"] == "user":
            return k
    raise ValueError("the conversation has no user turn to ask")


def question_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The question being asked: the last user turn without the video placeholder."""
    return messages[_last_user(messages)]["content"].replace(VIDEO_PLACEHOLDER, "").strip()


def segment_prompt(template: str, question: str) -> str:
    """The user text of one segment description (``{question}`` filled in)."""
    return template.format(question=question) if "{question}" in template else template


def lvcot_prompt(messages: Sequence[Mapping[str, str]], summaries: Sequence[str]) -> list[dict[str, str]]:
    """The final conversation: ``<think>`` + summaries joined by spaces + ``</think>`` before the question.

    The thoughts go in front of the last user turn's text, after the video placeholder when the turn starts
    with it (the video stays where it was). The summaries have any video placeholder removed.
    """
    out = [dict(m) for m in messages]
    k = _last_user(out)
    joined = " ".join(s.replace(VIDEO_PLACEHOLDER, " ").strip() for s in summaries)
    think = f"{THINK_OPEN}{joined}{THINK_CLOSE}"
    content = out[k]["content"]
    head, rest = "", content
    if content.lstrip().startswith(VIDEO_PLACEHOLDER):
        at = content.index(VIDEO_PLACEHOLDER) + len(VIDEO_PLACEHOLDER)
        tail = content[at:]
        head, rest = content[:at] + tail[: len(tail) - len(tail.lstrip("\n"))], tail.lstrip("\n")
    out[k]["content"] = f"{head}{think}{rest}"
    return out


def segment_sample(sample: ConversationSample, span: tuple[float, float], index: int, prompt: str
                   ) -> ConversationSample:  # fmt: skip
    """The describe-this-segment sample: same video and audio, clip bounds = ``span``."""
    system = [dict(m) for m in sample.messages if m["role"] == "system"]
    user = {"role": "user", "content": f"{VIDEO_PLACEHOLDER}\n{prompt}"}
    return replace(sample, messages=[*system, user], start=span[0], end=span[1],
                   id=f"{sample.id}#lvcot{index}", meta=dict(sample.meta))  # fmt: skip


# ------------------------------------------------------------------------------------------- running
def _backend(collator: Any) -> str:
    """The decoder alias of a VideoCollator, also through wrappers that keep it as ``.collate``."""
    while collator is not None:
        if isinstance(getattr(collator, "backend", None), str):
            return collator.backend
        collator = getattr(collator, "collate", None)
    return "pyav"


def video_span(sample: ConversationSample, backend: str = "pyav") -> tuple[float, float]:
    """The ``(start, end)`` seconds the collator samples from, from container metadata (no decoding).

    Raises:
        VideoDecodeError: the file cannot be opened, or the clip bounds lie outside the video.
    """
    from vidtempo.data.video import open_video

    assert sample.video is not None
    with open_video(sample.video, backend) as decoder:
        duration = float(decoder.meta.duration)
    start = float(sample.start or 0.0)
    end = min(float(sample.end), duration) if sample.end is not None else duration
    if end <= start:
        raise VideoDecodeError(sample.video, f"empty clip [{start}, {end}) in a {duration:.3f} s video")
    return start, end


def generate_greedy(model: VideoModel, tokenizer: Any, batch: Any, max_new_tokens: int) -> list[str]:
    """Greedy texts for a collated batch, on the model's device (one stripped string per row)."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        new = model.generate(**batch.to(device).model_inputs(with_labels=False), max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             do_sample=False)  # fmt: skip
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def _describe(
    model: VideoModel,
    tokenizer: Any,
    collator: Callable[[list[Any]], Any],
    segments: list[ConversationSample],
    max_new_tokens: int,
    batch_size: int,
) -> tuple[dict[str, str], dict[str, str]]:
    """({segment id: description}, {segment id: skip reason}) for every segment sample."""
    texts: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for k in range(0, len(segments), batch_size):
        batch = collator(segments[k : k + batch_size])
        skipped.update({s.id: s.reason for s in batch.skipped})
        if len(batch):
            texts.update(zip(batch.ids, generate_greedy(model, tokenizer, batch, max_new_tokens)))
    return texts, skipped


def run_lvcot(
    model: VideoModel,
    tokenizer: Any,
    collator: Callable[[list[Any]], Any],
    samples: Sequence[Any],
    settings: LVCoTSettings,
    *,
    batch_size: int | None = None,
) -> list[LVCoTResult]:
    """Describe the segments of every sample and build the final prompts (one result per sample, in order).

    Args:
        model: a ``VideoLLM`` (``generate`` returns only the new token ids), in eval mode.
        tokenizer: its tokenizer.
        collator: a ``VideoCollator(generation=True)`` (or a wrapper such as ``ControlledCollator``); it
            decodes each segment with its own frame settings.
        samples: ``ConversationSample`` objects (or objects with ``to_conversation()``) with unique ids.
        settings: LVCoT settings.
        batch_size: segments per ``generate`` call (default: all segments of ``samples`` at once).

    Returns:
        ``LVCoTResult`` per sample; samples shorter than the rule's first threshold (N = 1), without a video,
        or whose video cannot be probed or decoded keep their messages (``skipped`` says why for the latter).
    """
    from vidtempo.data.collate import as_conversation

    convs = [as_conversation(s) for s in samples]
    ids = [c.id for c in convs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run_lvcot needs unique sample ids, got {ids}")
    results, plans = [], []
    backend = _backend(collator)
    for conv in convs:
        results.append(LVCoTResult(list(conv.messages)))
        if conv.video is None:
            continue
        try:
            start, end = video_span(conv, backend)
        except VideoDecodeError as err:
            results[-1].skipped = err.reason
            continue
        results[-1].duration = end - start
        n = settings.num_segments(end - start)
        if n > 1:
            prompt = segment_prompt(settings.prompt, question_text(conv.messages))
            spans = segment_spans(start, end, n)
            segs = [segment_sample(conv, span, k, prompt) for k, span in enumerate(spans)]
            plans.append((len(results) - 1, spans, segs))
    segments = [seg for _, _, segs in plans for seg in segs]
    texts, skipped = _describe(model, tokenizer, collator, segments, settings.max_new_tokens,
                               batch_size or max(len(segments), 1))  # fmt: skip
    for index, spans, segs in plans:
        missing = [s.id for s in segs if s.id not in texts]
        if missing:
            results[index].skipped = skipped.get(missing[0], f"segment {missing[0]} produced no description")
            continue
        summaries = [texts[s.id] for s in segs]
        results[index] = replace(results[index], messages=lvcot_prompt(convs[index].messages, summaries),
                                 summaries=summaries, segments=spans)  # fmt: skip
    return results


__all__ = [
    "DESCRIBE_PROMPT",
    "PROMPTS",
    "QUESTION_PROMPT",
    "RULES",
    "LVCoTError",
    "LVCoTResult",
    "LVCoTSettings",
    "lvcot_prompt",
    "question_text",
    "run_lvcot",
    "segment_prompt",
    "segment_sample",
    "segment_spans",
    "video_span",
]
