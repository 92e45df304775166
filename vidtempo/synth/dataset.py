"""TempoSynth as a training dataset: generates the set on first use (resumable), then reads its
conversation annotations through the ordinary ``ConversationDataset`` loader.

Example:
    >>> ds = SynthConversations("runs/data/tiny", split="train", num_videos=8)  # doctest: +SKIP
    >>> ds[0].messages[0]["content"].startswith("<video>")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from torch.utils.data import Dataset

from vidtempo.data.samples import VIDEO_PLACEHOLDER, ConversationSample


class SynthConversations(Dataset):
    """Conversations of one TempoSynth split, optionally restricted to some tasks.

    Args:
        root: output folder of the generator (generated there when its manifest is missing).
        split: ``train``, ``val`` or ``test``.
        tasks: keep only these tasks (e.g. ``[grounding]``); None = all.
        num_videos, seed, size, fps, min_duration, max_duration: generator settings.
        limit: keep at most this many samples (after task filtering and grouping).
        multi_turn: merge all kept questions about one video into one multi-turn conversation (the video
            is encoded once for all of them: about 4x more supervised answer tokens per encoded video for
            grounding).
        workers: rendering processes when the set is generated (0 = one per CPU core).
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        tasks: list[str] | None = None,
        num_videos: int = 32,
        seed: int = 0,
        size: int = 64,
        fps: int = 8,
        min_duration: float = 6.0,
        max_duration: float = 30.0,
        limit: int | None = None,
        multi_turn: bool = False,
        workers: int = 0,
    ) -> None:
        from vidtempo.data.datasets import ConversationDataset
        from vidtempo.synth.generate import generate

        self.root = Path(root)
        if not (self.root / "manifest.json").is_file():
            generate(self.root, num_videos=num_videos, seed=seed, size=size, fps=fps,
                     min_duration=min_duration, max_duration=max_duration,
                     workers=workers or os.cpu_count() or 1)  # fmt: skip
        path = self.root / "annotations" / split / "conversations.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: is {self.root} a TempoSynth folder with a '{split}' split?"
            )
        samples = ConversationDataset(path, video_root=self.root).samples
        if tasks:
            samples = [s for s in samples if s.meta.get("task") in set(tasks)]
            if not samples:
                raise ValueError(f"{path}: no samples of tasks {tasks}")
        if multi_turn:
            samples = group_by_video(samples)
        self.samples: list[ConversationSample] = samples[:limit] if limit else samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ConversationSample:
        return self.samples[index]


def group_by_video(samples: list[ConversationSample]) -> list[ConversationSample]:
    """One multi-turn conversation per video, in first-appearance order; the ``<video>`` placeholder stays
    in the first user turn only. The merged sample keeps the first sample's id and meta, plus ``turns``."""
    by_video: dict[str | None, list[ConversationSample]] = {}
    for s in samples:
        by_video.setdefault(s.video, []).append(s)
    merged = []
    for group in by_video.values():
        messages = list(group[0].messages)
        for s in group[1:]:
            messages += [{**m, "content": m["content"].replace(f"{VIDEO_PLACEHOLDER}\n", "").replace(VIDEO_PLACEHOLDER, "")}
                         for m in s.messages]  # fmt: skip
        merged.append(
            dataclasses.replace(group[0], messages=messages, meta={**group[0].meta, "turns": len(group)})
        )
    return merged
