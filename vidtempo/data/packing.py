"""Token-budget batches for padding-free packing (recipe key ``data.packing: {max_tokens: N}``).

With packing, a training batch is not ``batch_size`` samples but as many samples as fill ``max_tokens`` LLM
tokens (text + video): :class:`TokenBudgetBatchSampler` places the samples of each shuffled window
first-fit-decreasing into bins of ``max_tokens``, using each sample's length from :func:`sample_lengths` (its
tokenised conversation, after ``data.overlong``, plus the model's video tokens per clip, an upper bound).
:class:`PackingCollator` marks every batch with ``packing = max_tokens``, so ``batch.model_inputs()`` asks the
model to run its LLM on packed rows (``vidtempo.models.packed_attention``): several samples per row, attention
confined to each sample, no padding tokens computed.

Example:
    >>> sampler = TokenBudgetBatchSampler([5, 9, 2, 4, 7, 3], max_tokens=10, shuffle=False)
    >>> batches = list(sampler)
    >>> batches, [sum([5, 9, 2, 4, 7, 3][i] for i in b) for b in batches]
    ([[1], [4, 5], [0, 3], [2]], [9, 10, 9, 2])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vidtempo.data.chat import VIDEO_TOKEN_INDEX
from vidtempo.data.collate import VideoTextBatch, as_conversation
from vidtempo.utils.bins import first_fit_decreasing

KEY = "data.packing.max_tokens"


class TokenBudgetBatchSampler:
    """Yields lists of dataset indices whose summed lengths fit ``max_tokens``.

    Each epoch the items are shuffled (seeded by ``seed`` and the epoch), cut into windows of ``window`` items,
    and every window is placed first-fit-decreasing into bins of ``max_tokens`` tokens; the bins (batches) are
    shuffled. Every item is drawn once per epoch.

    Args:
        lengths: tokens of every dataset item (:func:`sample_lengths`).
        max_tokens: token budget of a batch (``data.packing.max_tokens``).
        shuffle: shuffle items and batches each epoch (``set_epoch`` changes the draw).
        seed: base seed. window: items placed together (larger: fuller batches, less randomness).
        max_samples: most items per batch (None = no cap).
        num_replicas, rank: data-parallel sharding: rank r takes every ``num_replicas``-th batch from r, every
            rank the same number of batches.

    Raises:
        ValueError: an item longer than ``max_tokens`` (naming ``data.packing.max_tokens``).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 256,
        max_samples: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_tokens < 1 or window < 1 or (max_samples is not None and max_samples < 1):
            raise ValueError(f"{KEY}, window and max_samples must be >= 1, got {max_tokens}, {window}, {max_samples}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        too_long = [i for i, n in enumerate(lengths) if n > max_tokens]
        if too_long:
            i = too_long[0]
            raise ValueError(f"{KEY}={max_tokens} is smaller than item {i} ({lengths[i]} tokens with its video; "
                             f"{len(too_long)} such items): raise {KEY} to at least model.max_length")  # fmt: skip
        self.lengths = [int(n) for n in lengths]
        self.max_tokens, self.shuffle, self.seed, self.window = int(max_tokens), shuffle, seed, int(window)
        self.max_samples, self.num_replicas, self.rank = max_samples, num_replicas, rank
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Change the draw of the next ``__iter__`` (Lightning calls it through ``sampler``)."""
        self.epoch = epoch

    @property
    def sampler(self) -> TokenBudgetBatchSampler:
        """Itself, so Lightning's ``set_epoch`` on ``loader.batch_sampler.sampler`` reaches it."""
        return self

    def _all_batches(self) -> list[list[int]]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng((self.seed, self.epoch))
        n = len(self.lengths)
        order = [int(i) for i in rng.permutation(n)] if self.shuffle else list(range(n))
        batches: list[list[int]] = []
        for start in range(0, n, self.window):
            batches += self._fill(order[start : start + self.window])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (self.epoch, batches)
        return batches

    def _fill(self, items: list[int]) -> list[list[int]]:
        """First-fit decreasing of ``items`` into bins of ``max_tokens`` (and ``max_samples``)."""
        return first_fit_decreasing(items, self.lengths, self.max_tokens, self.max_samples)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(batches) // self.num_replicas if self.num_replicas > 1 else len(batches)
        yield from batches[self.rank :: self.num_replicas][:per_rank]

    def __len__(self) -> int:
        n = len(self._all_batches())
        return n // self.num_replicas if self.num_replicas > 1 else n


def sample_lengths(dataset: Any, collator: Any, key: str = "data.packing") -> list[int]:
    """LLM tokens of every item of ``dataset`` as ``collator`` (a ``VideoCollator`` with its length budget
    injected) would build it: the tokenised conversation after ``data.overlong`` (an over-long item under
    ``error`` raises here, before training; one the collator will skip counts 1 token) plus the model's video
    tokens per clip for an item with a video.

    Raises:
        ValueError: items with videos but no known video token count (naming ``key``, the recipe key that asked).
    """
    limit = collator.limit
    out = []
    for i in range(len(dataset)):
        sample = as_conversation(dataset[i])
        has_video = bool(sample.video)
        if has_video and not limit.video_tokens:
            raise ValueError(f"{key} needs the model's video tokens per clip to measure lengths: set "
                             "data.collator.num_frames (or max_frames)")  # fmt: skip
        fitted = collator._encode(sample, has_video=has_video)
        if fitted.reason is not None:
            out.append(1)  # the collator skips it
            continue
        text = sum(1 for t in fitted.ids if t != VIDEO_TOKEN_INDEX)
        out.append(text + (limit.video_tokens if has_video else 0))
    return out


class PackingCollator:
    """A collator whose batches ask the model for packed rows of at most ``max_tokens`` tokens
    (``batch.packing``, passed on by ``batch.model_inputs()``). Everything else is the wrapped collator's.

    Example:
        >>> from vidtempo.data.collate import VideoCollator
        >>> from vidtempo.models.tokenizers import tiny_tokenizer
        >>> packed = PackingCollator(VideoCollator(tiny_tokenizer(), num_frames=4, frame_size=32), 512)
        >>> packed.max_tokens, packed.frame_size
        (512, (32, 32))
    """

    def __init__(self, collator: Any, max_tokens: int) -> None:
        self.collator, self.max_tokens = collator, int(max_tokens)

    def __call__(self, samples: list[Any]) -> VideoTextBatch:
        batch = self.collator(samples)
        batch.packing = self.max_tokens
        return batch

    def __getattr__(self, name: str) -> Any:
        if name in ("collator", "max_tokens") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.collator, name)


def describe(lengths: Sequence[int], batches: Sequence[Sequence[int]], max_tokens: int) -> str:
    """One line: batches, samples per batch and the fill of the token budget (for logs)."""
    fill = [sum(lengths[i] for i in b) / max_tokens for b in batches] or [0.0]
    per = [len(b) for b in batches] or [0]
    return (f"{len(batches)} token-budget batches of {KEY}={max_tokens}: {np.mean(per):.1f} samples and "
            f"{100 * np.mean(fill):.0f}% of the budget per batch on average")  # fmt: skip


__all__ = ["KEY", "PackingCollator", "TokenBudgetBatchSampler", "describe", "sample_lengths"]
