"""TempoSynth's per-frame target slot layout (target builder ``synth_frame_slots``; read by the
``saliency`` auxiliary loss, ``vidtempo.training.auxiliary.saliency``).

``interval_targets``: "is the moment the sample is about (slot 0) or the moment option k names (slot k)
inside this frame?" from ``meta["timestamps"]`` / ``meta["evidence"]`` / ``meta["option_timestamps"]``,
and "has option k's moment begun by this frame?" (slot ``SEEN_OFFSET + k``: seen-so-far, a step), and
"has some / every option begun?" (slots ``ANY_SEEN_SLOT`` / ``ALL_SEEN_SLOT``). The layout follows
TempoSynth's multiple-choice questions (options A-E that each name a moment).

Example:
    >>> import torch
    >>> from vidtempo.data.samples import ConversationSample
    >>> s = ConversationSample(video=None, messages=[], id="q", meta={"timestamps": [1.0, 2.0]})
    >>> interval_targets([s], torch.tensor([[0.5, 1.5]]), torch.ones(1, 2, dtype=torch.bool))[0, :, 0]
    tensor([0., 1.])
"""

from __future__ import annotations

from typing import Any

import torch

from vidtempo.data.samples import ConversationSample
from vidtempo.data.targets import TargetBuilder

MAX_OPTIONS = 5  # options A-E
SEEN_OFFSET = MAX_OPTIONS  # slot SEEN_OFFSET + k: option k has begun by this frame (k = 1..5)
ANY_SEEN_SLOT = 1 + 2 * MAX_OPTIONS  # 11: some option has begun by this frame (a step at the first option)
ALL_SEEN_SLOT = ANY_SEEN_SLOT + 1  # 12: every option has begun by this frame (a step at the last option)
OPTION_SLOTS = 1 + 2 * MAX_OPTIONS  # the moment, the options and seen so far: a head's default slot count
FRAME_TARGET_SLOTS = ALL_SEEN_SLOT + 1  # every slot the collator fills


def _parse_intervals(raw: Any, sample: ConversationSample, key: str) -> list[tuple[float, float]] | None:
    if not raw:
        return None
    pairs = [raw] if not isinstance(raw[0], (list, tuple)) else raw
    try:
        return [(float(a), float(b)) for a, b in pairs]
    except (TypeError, ValueError) as err:
        raise ValueError(f"sample {sample.id}: meta.{key} must be [start, end] or a list of them, "
                         f"got {raw!r}") from err  # fmt: skip


def sample_intervals(sample: ConversationSample) -> list[tuple[float, float]] | None:
    """The moment(s) a single-question sample is about, in seconds (``[s, e]`` or ``[[s, e], ...]``):
    ``meta["timestamps"]`` (a grounding answer) or else ``meta["evidence"]`` (where the answer to a
    question can be seen, NExT-GQA-style); None when there is none or the sample merges several questions."""
    if int(sample.meta.get("turns", 1)) != 1:
        return None
    key = "timestamps" if sample.meta.get("timestamps") else "evidence"
    return _parse_intervals(sample.meta.get(key), sample, key)


def option_intervals(sample: ConversationSample) -> list[list[tuple[float, float]] | None]:
    """Per answer option, the moment(s) it names (``meta["option_timestamps"]``, one entry per option, None
    for an option that names no moment); [] when the sample has none or merges several questions."""
    raw = sample.meta.get("option_timestamps")
    if not raw or int(sample.meta.get("turns", 1)) != 1:
        return []
    if len(raw) > MAX_OPTIONS:
        raise ValueError(f"sample {sample.id}: {len(raw)} option_timestamps, at most {MAX_OPTIONS}")
    return [_parse_intervals(r, sample, f"option_timestamps[{k}]") for k, r in enumerate(raw)]


def interval_targets(
    samples: list[ConversationSample], times: torch.Tensor, frame_mask: torch.Tensor
) -> torch.Tensor:
    """(B, T, FRAME_TARGET_SLOTS): 1.0 for frames whose time is inside the slot's interval(s), 0.0 outside,
    NaN when unknown. Slot 0 is the sample's moment, slot k the moment of option k (A = 1), slot
    ``SEEN_OFFSET + k`` whether option k's first interval has begun by the frame's time ("seen so far": summed
    over frames it ranks the options by first appearance, which is what "which appears first?" asks), slot
    ``ANY_SEEN_SLOT`` whether some option has begun and ``ALL_SEEN_SLOT`` whether every option has (steps at
    the first and at the last option's start: they mark the answer's frame of "which appears first/last?"
    without knowing which letter names which object; only when every option names a moment)."""
    out = torch.full((*times.shape, FRAME_TARGET_SLOTS), float("nan"))
    for i, sample in enumerate(samples):
        slots = [sample_intervals(sample), *option_intervals(sample)]
        for k, intervals in enumerate(slots):
            if intervals is None:
                continue
            inside = torch.zeros(times.shape[1], dtype=torch.bool)
            for a, b in intervals:
                inside |= (times[i] >= a) & (times[i] < b)
            out[i, :, k] = inside.float()
            if k:
                out[i, :, SEEN_OFFSET + k] = (times[i] >= min(a for a, _ in intervals)).float()
        starts = [min(a for a, _ in iv) for iv in slots[1:] if iv]
        if len(starts) >= 2 and len(starts) == len(slots) - 1:  # every option names a moment
            out[i, :, ANY_SEEN_SLOT] = (times[i] >= min(starts)).float()
            out[i, :, ALL_SEEN_SLOT] = (times[i] >= max(starts)).float()
        out[i, ~frame_mask[i]] = float("nan")
    return out


class SynthFrameSlots(TargetBuilder):
    """Target builder of the 13-slot layout above (``interval_targets``), for ``data.collator.targets``.

    Example:
        >>> import torch
        >>> from vidtempo.data.samples import ConversationSample
        >>> s = ConversationSample(video=None, messages=[], id="q", meta={"timestamps": [1.0, 2.0]})
        >>> SynthFrameSlots()([s], torch.tensor([[0.5, 1.5]]), torch.ones(1, 2, dtype=torch.bool)).shape
        torch.Size([1, 2, 13])
    """

    channels = FRAME_TARGET_SLOTS

    def __call__(
        self, samples: list[ConversationSample], times: torch.Tensor, frame_mask: torch.Tensor
    ) -> torch.Tensor:
        return interval_targets(samples, times, frame_mask)
