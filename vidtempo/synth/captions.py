"""TempoSynth (video, caption) pairs for stage-1 video-text alignment (the ``align`` objective).

One pair per video of a split: the split's ``retrieval.csv`` caption (the objects in order of appearance, the
cuts and the beeps; ``vidtempo.synth.annotate.retrieval_caption``), the same text the ``synth_retrieval``
benchmark ranks videos with. The set is generated on first use, as :class:`~vidtempo.synth.dataset.SynthConversations`
does. Recipe alias: ``synth_captions`` (dataset kind).

Example:
    >>> pairs = SynthCaptions("runs/data/ts", split="train", num_videos=8, max_duration=8)  # doctest: +SKIP
    >>> pairs[0].caption  # doctest: +SKIP
    'a red circle, then a blue square and finally a green star appear; the scene cuts once; ...'
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from vidtempo.data.samples import RetrievalSample


class SynthCaptions(Dataset):
    """The (video, retrieval caption) pairs of one TempoSynth split.

    Args:
        root: TempoSynth folder (generated there when its manifest is missing).
        split: ``train``, ``val`` or ``test``.
        num_videos, seed, size, fps, min_duration, max_duration: generator settings (first use only).
        limit: keep at most this many pairs.
        workers: rendering processes when the set is generated (0 = one per CPU core).
        events: put each video's ``events`` rows (objects and beeps, ``[label, start, end]``) in the pair's
            ``meta``, for per-frame tag targets (``data.collator.targets``, the ``encoder_tags`` loss).
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        num_videos: int = 32,
        seed: int = 0,
        size: int = 64,
        fps: int = 8,
        min_duration: float = 6.0,
        max_duration: float = 30.0,
        limit: int | None = None,
        workers: int = 0,
        events: bool = True,
    ) -> None:
        from vidtempo.data.datasets import MSRVTTDataset
        from vidtempo.synth.annotate import script_events
        from vidtempo.synth.generate import Manifest, generate

        self.root = Path(root)
        if not (self.root / "manifest.json").is_file():
            generate(self.root, num_videos=num_videos, seed=seed, size=size, fps=fps, min_duration=min_duration,
                     max_duration=max_duration, workers=workers or os.cpu_count() or 1)  # fmt: skip
        path = self.root / "annotations" / split / "retrieval.csv"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: is {self.root} a TempoSynth folder with a '{split}' split?"
            )
        samples = MSRVTTDataset(path, video_root=self.root / "videos").samples
        self.samples: list[RetrievalSample] = samples[:limit] if limit else samples
        if events:
            scripts = Manifest.load(self.root).scripts(split)
            for sample in self.samples:
                script = scripts.get(Path(sample.video).stem)
                if script is None:
                    raise ValueError(f"{path}: video '{sample.video}' has no event script in the split's scripts.json")
                sample.meta["events"] = script_events(script)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RetrievalSample:
        return self.samples[index]
