"""Several datasets drawn in fixed proportions: ``data.train: {_target_: mixture, datasets: [...], weights: [...]}``.

An epoch of :class:`MixtureDataset` is ``length`` draws. Child *k* gets ``n_k`` of them, its weight's share of
``length`` rounded by largest remainder (so the counts sum to ``length`` and each is within one draw of
``length * w_k / sum(w)``). A child with ``n_k >= len(child)`` contributes ``n_k // len(child)`` full passes
plus a random subset of the rest; a child with ``n_k < len(child)`` a random subset of ``n_k`` distinct items.
The draws are then interleaved in a random order. Every choice comes from ``seed`` alone, so the mixture is an
ordinary map-style dataset of fixed length: the same seed gives the same items in the same order, and
``ResumableDataLoader`` resumes it mid-epoch like any other dataset (the loader's sampler shuffles it per
epoch as usual).

``length`` defaults to the smallest epoch in which every child is drawn at least its own size at its weight,
``max_k ceil(len_k * sum(w) / w_k)`` (Hugging Face ``interleave_datasets``' "all_exhausted" idea): small
children are repeated up to their weight, nothing is left out. Give ``length`` to make epochs shorter (large
children are then subsampled; which items depends on ``seed``, the same every epoch).

Children are any datasets: ``ConversationSample`` datasets, grounding / multiple-choice datasets (their
conversation form is used, as ``ds.conversations()`` gives it), or preference datasets (all children must then
be preference datasets: one collator reads the batch).

Example:
    >>> mix = MixtureDataset([list(range(10)), list(range(100, 104))], weights=[3, 1], length=20, seed=0)
    >>> len(mix), mix.counts, sorted(mix.report().items())
    (20, [15, 5], [('0', 15), ('1', 5)])
    >>> [mix[i] for i in range(len(mix))] == [MixtureDataset([list(range(10)), list(range(100, 104))],
    ...                                        weights=[3, 1], length=20, seed=0)[i] for i in range(20)]
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from vidtempo.data.samples import ConversationSample, PreferenceSample


def split_counts(length: int, weights: Sequence[float]) -> list[int]:
    """``length`` split in proportion to ``weights`` by largest remainder (ties go to the earlier child).

    Example:
        >>> split_counts(10, [1, 1, 1])
        [4, 3, 3]
    """
    total = float(sum(weights))
    exact = [length * w / total for w in weights]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in order[: length - sum(counts)]:
        counts[k] += 1
    return counts


class MixtureDataset(Dataset):
    """Draw from several datasets in proportion to ``weights`` (module doc for the exact rule).

    Args:
        datasets: the children (built datasets; in a recipe, nodes under ``datasets:``).
        weights: one positive number per child (normalised); None = proportional to the children's sizes.
        length: draws per epoch; None = every child at least once through at its weight (module doc).
        seed: decides which items and in what order (use ``${seed}`` for the recipe's seed).
        names: a name per child for :meth:`report` and :meth:`source` (default ``"0"``, ``"1"``, ...).
    """

    def __init__(
        self, datasets: Sequence[Any], weights: Sequence[float] | None = None, length: int | None = None,
        seed: int = 0, names: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("mixture: 'datasets' is empty; expected at least one dataset")
        sizes = [len(d) for d in self.datasets]
        for k, n in enumerate(sizes):
            if n == 0:
                raise ValueError(f"mixture: datasets[{k}] ({_describe(self.datasets[k])}) has no samples")
        weights = list(sizes if weights is None else weights)
        if len(weights) != len(self.datasets):
            raise ValueError(f"mixture: {len(weights)} weights for {len(self.datasets)} datasets; give one per dataset")
        for k, w in enumerate(weights):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0 or not math.isfinite(w):
                raise ValueError(f"mixture: weights[{k}] must be a positive number, got {w!r}")
        self.names = [str(n) for n in names] if names is not None else [str(k) for k in range(len(sizes))]
        if len(self.names) != len(sizes):
            raise ValueError(f"mixture: {len(self.names)} names for {len(sizes)} datasets")
        total = float(sum(weights))
        self.weights = [w / total for w in weights]
        if length is None:
            length = max(math.ceil(n / w - 1e-9) for n, w in zip(sizes, self.weights))
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"mixture: length must be a positive integer or null, got {length!r}")
        self.length, self.seed = length, int(seed)
        self.counts = split_counts(length, self.weights)
        self._convert = [_needs_conversation(d) for d in self.datasets]
        kinds = {_kind(d, c) for d, c in zip(self.datasets, self._convert)}
        if len(kinds) > 1:
            raise ValueError("mixture: preference datasets cannot be mixed with conversation datasets (one "
                             "collator reads a batch); mix preference datasets with each other only")  # fmt: skip
        self._index = self._schedule(sizes)  # (length, 2) long: (child, item) of each draw

    def _schedule(self, sizes: list[int]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        draws = []
        for k, (n, count) in enumerate(zip(sizes, self.counts)):
            full, rest = divmod(count, n)
            items = [torch.arange(n).repeat(full), torch.randperm(n, generator=gen)[:rest]]
            picked = torch.cat(items)
            draws.append(torch.stack([torch.full_like(picked, k), picked], dim=1))
        index = torch.cat(draws)
        return index[torch.randperm(len(index), generator=gen)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if not -self.length <= index < self.length:
            raise IndexError(f"mixture index {index} out of range for {self.length} draws")
        child, item = (int(v) for v in self._index[index])
        dataset = self.datasets[child]
        return dataset.conversation(item) if self._convert[child] else dataset[item]

    def source(self, index: int) -> str:
        """The name of the child that draw ``index`` comes from."""
        return self.names[int(self._index[index, 0])]

    def report(self) -> dict[str, int]:
        """Draws per epoch by child name."""
        return dict(zip(self.names, self.counts))

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {c}/{len(d)}" for n, c, d in zip(self.names, self.counts, self.datasets))
        return f"MixtureDataset({self.length} draws per epoch; {parts})"


def _needs_conversation(dataset: Any) -> bool:
    """Whether a child's items must be turned into conversations (grounding, multiple choice, ...): items that
    are neither conversations nor preference pairs, from a dataset with a ``conversation(i)`` form."""
    first = dataset[0]
    if isinstance(first, (ConversationSample, PreferenceSample)) or hasattr(first, "to_conversation"):
        return False
    return callable(getattr(dataset, "conversation", None))


def _kind(dataset: Any, convert: bool) -> str:
    return "preference" if not convert and isinstance(dataset[0], PreferenceSample) else "conversation"


def _describe(dataset: Any) -> str:
    path = getattr(dataset, "path", None)
    return f"{type(dataset).__name__}({path})" if path else type(dataset).__name__
