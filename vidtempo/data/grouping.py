"""Batches that hold several questions about the same clip, so each clip is encoded once per batch.

A video QA set usually asks several questions per video (TempoSynth: about 8 per training video). Drawn
independently, a batch of 16 holds 16 different clips, and the vision encoder runs on every one of them. With
:class:`VideoGroupedBatchSampler` a batch holds ``batch_size / per_video`` clips with up to ``per_video``
questions each; the collator then decodes and stacks each clip once (``VideoCollator(share_clips=True)``:
``batch.frames`` (U, T, 3, H, W) for U distinct clips and ``batch.clip_index`` (B,) naming each row's clip),
and ``VideoLLM`` encodes the U clips and gives every row its clip's features. Every question is still drawn
once per epoch.

Example:
    >>> keys = ["a", "a", "a", "b", "b", "c"]            # the clip of each dataset item
    >>> sampler = VideoGroupedBatchSampler(keys, batch_size=4, per_video=2, seed=0)
    >>> batches = list(sampler)
    >>> sorted(i for b in batches for i in b)            # every item exactly once
    [0, 1, 2, 3, 4, 5]
    >>> [len(b) for b in batches]                         # full batches but the last
    [4, 2]
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from vidtempo.data.collate import as_conversation
from vidtempo.data.samples import ConversationSample


class VideoGroupedBatchSampler:
    """Yields lists of dataset indices; each batch is made of runs of up to ``per_video`` items of one clip.

    Each epoch the items of every clip are shuffled and cut into runs of ``per_video``, the runs are
    shuffled, and the runs, in that order, are cut into batches of ``batch_size`` (only the last batch is
    smaller). A batch holds about ``batch_size / per_video`` clips: a run may straddle two batches, and the
    last run of a clip can be shorter.

    Args:
        keys: one hashable clip key per dataset item (see :func:`clip_keys`).
        batch_size: items per batch (at most).
        per_video: items of one clip per run; 1 = ordinary shuffled batches of distinct clips.
        shuffle: shuffle items and runs each epoch (``set_epoch`` changes the draw); False keeps the order.
        seed: base seed of the shuffle.
        num_replicas, rank: data-parallel sharding: rank r takes every ``num_replicas``-th batch from r, and
            every rank gets the same number of batches (the last ones are dropped as needed).
    """

    def __init__(
        self,
        keys: Sequence[Hashable],
        batch_size: int,
        per_video: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or per_video < 1:
            raise ValueError(f"batch_size and per_video must be >= 1, got {batch_size} and {per_video}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        groups: dict[Hashable, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            groups[key].append(i)
        self.groups = list(groups.values())
        self.batch_size, self.per_video, self.shuffle, self.seed = batch_size, per_video, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle of the next ``__iter__`` (Lightning calls it at each epoch, through ``sampler``)."""
        self.epoch = epoch

    @property
    def sampler(self) -> VideoGroupedBatchSampler:
        """Itself. Lightning calls ``set_epoch`` on ``loader.sampler`` and ``loader.batch_sampler.sampler``, never
        on the batch sampler: without this the grouped batches would repeat the same order every epoch."""
        return self

    def _runs(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        runs = []
        for group in self.groups:
            items = [group[i] for i in rng.permutation(len(group))] if self.shuffle else list(group)
            runs += [items[i : i + self.per_video] for i in range(0, len(items), self.per_video)]
        return [runs[i] for i in rng.permutation(len(runs))] if self.shuffle else runs

    def _all_batches(self) -> list[list[int]]:
        order = [i for run in self._runs() for i in run]
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(batches) // self.num_replicas if self.num_replicas > 1 else len(batches)
        yield from batches[self.rank :: self.num_replicas][:per_rank]

    def __len__(self) -> int:
        n = -(-sum(len(g) for g in self.groups) // self.batch_size)  # full batches but the last
        return n // self.num_replicas if self.num_replicas > 1 else n


def clip_keys(dataset: Any) -> list[Hashable]:
    """The clip of every item of a dataset of samples: (video, audio, start, end); items without a video get
    a key of their own. Datasets hand out samples without decoding anything, so this is cheap."""
    keys: list[Hashable] = []
    for i in range(len(dataset)):
        sample: ConversationSample = as_conversation(dataset[i])
        keys.append((sample.video, sample.audio, sample.start, sample.end) if sample.video else ("no-video", i))
    return keys
