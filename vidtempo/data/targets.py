"""Collator **target builders**: per-frame training targets that auxiliary losses read from ``batch.targets``.

A recipe names them under ``data.collator.targets`` (registry kind ``target_builder``)::

    collator:
      targets:
        frame_tags: {_target_: event_tags, labels: [red circle, blue square], window: []}

and the collator stores each builder's (B, T, C) tensor as ``batch.targets["frame_tags"]``: 1.0 / 0.0 per
frame and channel, NaN where unknown (padded frames, samples without the annotation). An auxiliary loss
(``vidtempo.training.auxiliary``) declares the target names it reads; the recipe fails at build time when a
loss asks for a target no builder makes.

Example:
    >>> import torch
    >>> from vidtempo.data.samples import ConversationSample
    >>> s = ConversationSample(video=None, messages=[], id="q", meta={"events": [["dog", 1.0, 2.0]]})
    >>> EventTags(labels=["dog", "cat"])([s], torch.tensor([[0.5, 1.5]]), torch.ones(1, 2, dtype=torch.bool))[0]
    tensor([[0., 0.],
            [1., 0.]])
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from vidtempo.data.samples import ConversationSample


class TargetBuilder(ABC):
    """Turns a batch's samples and frame times into per-frame targets. Subclass it for a new target.

    Subclasses set :attr:`channels` (C) and implement :meth:`__call__`. Builders run in DataLoader workers,
    so they must be picklable and cheap.
    """

    channels: int

    @abstractmethod
    def __call__(
        self, samples: list[ConversationSample], times: torch.Tensor, frame_mask: torch.Tensor
    ) -> torch.Tensor:
        """times (B, T) seconds, frame_mask (B, T) bool -> (B, T, C) float; NaN = unknown."""


class EventTags(TargetBuilder):
    """"Which labels are on screen (or heard) at this frame?" from ``meta["events"]`` rows
    ``[label, start, end]``.

    Args:
        labels: the C tag labels, in channel order. Events with other labels are ignored.
        window: labels (short events such as sounds) that count when they overlap the frame's window, from
            its time to the next frame's, instead of at its instant.
    """

    def __init__(self, labels: list[str], window: list[str] | None = None) -> None:
        if not labels:
            raise ValueError("event_tags needs at least one label")
        self.labels = list(labels)
        self.window = list(window or [])
        if set(self.window) - set(self.labels):
            raise ValueError(f"event_tags window labels {sorted(set(self.window) - set(self.labels))} are not in "
                             "labels")  # fmt: skip
        self.channels = len(self.labels)

    def __call__(
        self, samples: list[ConversationSample], times: torch.Tensor, frame_mask: torch.Tensor
    ) -> torch.Tensor:
        index = {label: c for c, label in enumerate(self.labels)}
        windowed = set(self.window)
        out = torch.full((*times.shape, self.channels), float("nan"))
        for i, sample in enumerate(samples):
            events = sample.meta.get("events")
            if events is None:
                continue
            t = times[i][frame_mask[i]]  # (T_i,)
            step = float((t[1:] - t[:-1]).median()) if len(t) > 1 else 1.0
            next_t = torch.cat([t[1:], t[-1:] + step])  # (T_i,) end of each frame's window
            row = torch.zeros(len(t), self.channels)
            for ev in events:
                if not (isinstance(ev, (list, tuple)) and len(ev) == 3):
                    raise ValueError(f"sample {sample.id}: meta.events rows must be [label, start, end], got {ev!r}")
                if ev[0] not in index:
                    continue
                a, b = float(ev[1]), float(ev[2])
                hit = (t < b) & (next_t > a) if ev[0] in windowed else (t >= a) & (t < b)
                row[:, index[ev[0]]] += hit.float()
            out[i, frame_mask[i]] = row.clamp(max=1.0)
        return out
