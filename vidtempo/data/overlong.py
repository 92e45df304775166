"""Over-long samples: what the collator does with a sample whose text plus video exceeds the model's context.

The policy is the recipe's ``data.overlong``:

* ``error`` (default): stop with one line naming the record, its token counts and whether the text or the
  video makes it too long;
* ``skip``: leave the sample out of its batch (a ``SkipRecord`` the skip tracker counts);
* ``truncate``: cut the answer tokens from the end (the prompt and the video are kept); a sample whose prompt
  alone is too long cannot be cut and is skipped.

The collator knows the text length; the video's token count comes from the model, which the trainer injects
(:func:`length_settings`: ``max_length`` and an upper bound of video tokens per clip).

Example:
    >>> limit = LengthLimit(policy="truncate", max_length=6, video_tokens=2)
    >>> fit = limit.fit([1, -200, 2, 3, 4, 5, 6], [-100, -100, -100, 3, 4, 5, 6], has_video=True, record="r1")
    >>> fit.ids, fit.truncated, fit.reason
    ([1, -200, 2, 3, 4], True, None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vidtempo.data.chat import IGNORE_INDEX, VIDEO_TOKEN_INDEX

OVERLONG_POLICIES = ("error", "skip", "truncate")  # data.overlong: the one list the recipe check reads


class OverlongError(ValueError):
    """A sample is longer than the model's context and ``data.overlong`` is ``error``."""


@dataclass
class Fitted:
    """A sample after the length check: its (possibly cut) tokens, and why it must be skipped (None = keep)."""

    ids: list[int]
    labels: list[int]
    reason: str | None = None
    truncated: bool = False


@dataclass
class LengthLimit:
    """The length budget of one sample.

    Attributes:
        policy: ``error``, ``skip`` or ``truncate`` (see the module docstring).
        max_length: the model's context in tokens, text and video together (None = unknown: not checked).
        max_text_tokens: a limit on the text alone (``data.collator.max_text_tokens``; None = none).
        video_tokens: upper bound of one clip's video tokens (0 = unknown: the text alone is checked).
    """

    policy: str = "error"
    max_length: int | None = None
    max_text_tokens: int | None = None
    video_tokens: int = 0

    def __post_init__(self) -> None:
        if self.policy not in OVERLONG_POLICIES:
            raise ValueError(f"data.overlong must be one of {', '.join(OVERLONG_POLICIES)}, got {self.policy!r}")

    def text_budget(self, has_video: bool) -> int | None:
        """The most text tokens a sample may have (None = no limit)."""
        limits = [n for n in (self.max_text_tokens,) if n is not None]
        if self.max_length is not None:
            limits.append(self.max_length - (self.video_tokens if has_video else 0))
        return min(limits) if limits else None

    def fit(self, ids: list[int], labels: list[int], *, has_video: bool, record: str) -> Fitted:
        """Check one tokenised sample (``ids`` holding one ``VIDEO_TOKEN_INDEX`` placeholder at most).

        Raises:
            OverlongError: too long under the ``error`` policy (the message names ``record``).
        """
        text = sum(1 for i in ids if i != VIDEO_TOKEN_INDEX)
        budget = self.text_budget(has_video)
        if budget is None or text <= budget:
            return Fitted(ids, labels)
        problem = self.describe(text, has_video, record)
        if self.policy == "error":
            raise OverlongError(f"{problem}; set data.overlong: skip or truncate, shorten the text, sample fewer "
                                "frames or raise model.max_length")  # fmt: skip
        if self.policy == "truncate":
            cut = _cut_answer(ids, labels, budget)
            if cut is not None:
                return Fitted(ids[:cut], labels[:cut], truncated=True)
            return Fitted(ids, labels, reason=f"{problem}; the prompt alone is too long to truncate the answer")
        return Fitted(ids, labels, reason=problem)

    def describe(self, text: int, has_video: bool, record: str) -> str:
        """One line: the record, its counts, the limit it breaks and whether the text or the video is the cause."""
        video = self.video_tokens if has_video else 0
        if self.max_text_tokens is not None and text > self.max_text_tokens:
            return (f"{record}: {text} text tokens exceed data.collator.max_text_tokens={self.max_text_tokens}: "
                    "the text is too long")  # fmt: skip
        cause = "the text alone is too long" if text > (self.max_length or 0) else (
            f"the video's {video} tokens make it too long, the text alone fits")  # fmt: skip
        return f"{record}: {text} text + {video} video tokens exceed model.max_length={self.max_length}: {cause}"


def _cut_answer(ids: list[int], labels: list[int], budget: int) -> int | None:
    """The sequence length that keeps ``budget`` text tokens, or None when that would cut into the prompt
    (every token before the first answer token) or leave no answer token."""
    first_answer = next((k for k, lab in enumerate(labels) if lab != IGNORE_INDEX), None)
    if first_answer is None:
        return None
    placeholders = sum(1 for i in ids[: first_answer + 1] if i == VIDEO_TOKEN_INDEX)
    cut = budget + placeholders  # the placeholder sits in the prompt: it takes a position, not a text token
    return cut if cut > first_answer else None


def length_settings(data: dict[str, Any], model: Any) -> dict[str, Any]:
    """What the trainer injects into ``data.collator`` so the collator can apply ``data.overlong``: the policy
    (``data.overlong``, else ``data.collator.overlong``, else ``error``), ``model.max_length`` and the model's
    video tokens per clip (``model.video_tokens`` at the collator's frame count: ``num_frames`` (default 8),
    else ``max_frames``; unknown under ``fps`` without ``max_frames``).

    Example:
        >>> class Model:
        ...     max_length = 64
        ...     def video_tokens(self, num_frames, audio=False):
        ...         return 4 * num_frames
        >>> length_settings({"overlong": "skip", "collator": {"num_frames": 8}}, Model())
        {'overlong': 'skip', 'max_length': 64, 'video_tokens': 32}
    """
    collator = data.get("collator") or {}
    frames = collator.get("max_frames") if collator.get("fps") else collator.get("num_frames", 8)
    if frames is None:
        frames = collator.get("max_frames")
    tokens = int(model.video_tokens(int(frames), audio=bool(collator.get("audio")))) if frames else 0
    policy = data.get("overlong") or collator.get("overlong") or "error"
    return {"overlong": policy, "max_length": getattr(model, "max_length", None),
            "video_tokens": tokens}  # fmt: skip
