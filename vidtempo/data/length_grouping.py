"""Batches of items of similar length, so a padded batch wastes little of the LLM's compute on padding.

A QA mix pads every row to its batch's longest: on TempoSynth a grounding question is about 50 LLM tokens
with its video and a four-option question about 90, so a drawn batch of 8 is about a fifth padding. With
:class:`LengthGroupedBatchSampler` (recipe key ``data.group_by_length: W``) each epoch's shuffled items are cut
into windows of ``W`` global batches, each window is sorted by length and cut into batches, and the batches are
shuffled in groups of one per rank: the ranks of a data-parallel step get neighbouring lengths (a step waits
for its slowest rank) and the batch size stays fixed. The idea is the "group by length" of common LM trainers;
a larger ``W`` pads less and mixes less (batches then hold questions of one kind more often).

Example:
    >>> lengths = [5, 90, 50, 88, 52, 91, 49, 87]
    >>> sampler = LengthGroupedBatchSampler(lengths, batch_size=2, window=4, seed=0)
    >>> batches = list(sampler)
    >>> sorted(i for b in batches for i in b)                      # every item once
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> sorted(sorted(lengths[i] for i in b) for b in batches)    # neighbours in length share a batch
    [[5, 49], [50, 52], [87, 88], [90, 91]]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

KEY = "data.group_by_length"


class LengthGroupedBatchSampler:
    """Yields lists of dataset indices: fixed-size batches of items of similar length.

    Each epoch (seeded by ``seed`` and the epoch) the items are shuffled and cut into windows of
    ``window * batch_size * num_replicas`` items; every window is sorted by length (longest first) and cut into
    batches of ``batch_size``; consecutive ``num_replicas`` batches form one step's group, and the groups are
    shuffled. Rank r takes the r-th batch of every group, and every rank the same number of batches (a last,
    incomplete group is dropped, as ``DistributedSampler`` drops or pads). Every item is drawn at most once
    per epoch; only the last batch of a window can be smaller than ``batch_size``.

    Args:
        lengths: LLM tokens of every dataset item (``vidtempo.data.packing.sample_lengths``).
        batch_size: items per batch (per rank).
        window: global batches sorted together (``data.group_by_length``); 1 sorts within a step only.
        shuffle: shuffle items and groups each epoch (``set_epoch`` changes the draw).
        seed: base seed of the shuffle.
        num_replicas, rank: data-parallel sharding.

    Raises:
        ValueError: ``batch_size`` or ``window`` below 1 (naming ``data.group_by_length``), a rank outside
            ``[0, num_replicas)``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        window: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or window < 1:
            raise ValueError(f"{KEY}: window and data.batch_size must be >= 1, got {window} and {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        self.lengths = np.asarray([int(n) for n in lengths], dtype=np.int64)
        self.batch_size, self.window, self.shuffle, self.seed = int(batch_size), int(window), shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Change the draw of the next ``__iter__`` (Lightning calls it through ``sampler``)."""
        self.epoch = epoch

    @property
    def sampler(self) -> LengthGroupedBatchSampler:
        """Itself, so Lightning's ``set_epoch`` on ``loader.batch_sampler.sampler`` reaches it."""
        return self

    def _groups(self) -> list[list[list[int]]]:
        """One epoch's step groups: ``num_replicas`` batches each (the last group of the epoch may be short)."""
        rng = np.random.default_rng((self.seed, self.epoch))
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        span = self.window * self.batch_size * self.num_replicas
        batches: list[list[int]] = []
        for start in range(0, n, span):
            items = order[start : start + span]
            items = items[np.argsort(-self.lengths[items], kind="stable")]  # longest first, ties keep the draw
            batches += [[int(i) for i in items[k : k + self.batch_size]] for k in range(0, len(items), self.batch_size)]
        r = self.num_replicas
        groups = [batches[k : k + r] for k in range(0, len(batches), r)]
        full = [g for g in groups if len(g) == r]
        if self.shuffle:
            full = [full[i] for i in rng.permutation(len(full))]
        return full + [g for g in groups if len(g) < r]

    def _all_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, [b for g in self._groups() for b in g])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(batches) // self.num_replicas
        yield from batches[self.rank :: self.num_replicas][:per_rank]

    def __len__(self) -> int:
        return len(self._all_batches()) // self.num_replicas


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of a padded batch's LLM positions that are padding, over ``batches``.

    Example:
        >>> round(padding_fraction([2, 4, 4], [[0, 1], [2]]), 3)   # rows padded to 4: 2 of 12 positions are padding
        0.167
    """
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / padded if padded else 0.0
