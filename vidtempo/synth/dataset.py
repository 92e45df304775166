"""TempoSynth as a training dataset: generates the set on first use (resumable), then reads its
conversation annotations through the ordinary ``ConversationDataset`` loader.

Example:
    >>> ds = SynthConversations("runs/data/tiny", split="train", num_videos=8)  # doctest: +SKIP
    >>> ds[0].messages[0]["content"].startswith("<video>")  # doctest: +SKIP
    True
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from vidtempo.data.samples import ConversationSample


class SynthConversations(Dataset):
    """Conversations of one TempoSynth split, optionally restricted to some tasks.

    Args:
        root: output folder of the generator (generated there when its manifest is missing).
        split: ``train``, ``val`` or ``test``.
        tasks: keep only these tasks (e.g. ``[grounding]``); None = all.
        num_videos, seed, size, fps, min_duration, max_duration: generator settings.
        limit: keep at most this many samples (after task filtering).
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
    ) -> None:
        from vidtempo.data.datasets import ConversationDataset
        from vidtempo.synth.generate import generate

        self.root = Path(root)
        if not (self.root / "manifest.json").is_file():
            generate(self.root, num_videos=num_videos, seed=seed, size=size, fps=fps,
                     min_duration=min_duration, max_duration=max_duration)  # fmt: skip
        path = self.root / "annotations" / split / "conversations.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: is {self.root} a TempoSynth folder with a '{split}' split?")
        samples = ConversationDataset(path, video_root=self.root).samples
        if tasks:
            samples = [s for s in samples if s.meta.get("task") in set(tasks)]
            if not samples:
                raise ValueError(f"{path}: no samples of tasks {tasks}")
        self.samples: list[ConversationSample] = samples[:limit] if limit else samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ConversationSample:
        return self.samples[index]
