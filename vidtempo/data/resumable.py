"""A training DataLoader that resumes mid-epoch where a checkpoint left it.

Lightning saves ``state_dict()`` of every training loader that has one (``fit_loop`` ->
``combined_loader``) and hands it back through ``load_state_dict()`` before the resumed run iterates. A plain
``DataLoader(shuffle=True)`` has neither, so a run resumed from a mid-epoch checkpoint starts that epoch over
with a new shuffle: some samples are trained twice, others not at all, and the resumed run is not the run it
continues. ``ResumableDataLoader`` records (epoch, batches consumed) and, on resume, skips that many batches of
the same epoch's order *by index*: skipped samples are never loaded or decoded.

The order must be a function of the epoch alone for this to hold: ``EpochRandomSampler`` (a ``RandomSampler``
whose generator is seeded by (seed, epoch) at ``set_epoch``, which Lightning calls at every epoch start),
``SequentialSampler``, ``DistributedSampler`` (what ``VideoDataModule`` uses under DDP/FSDP) and
``VideoGroupedBatchSampler`` all are.

Example:
    >>> loader = ResumableDataLoader(list(range(10)), batch_size=4, sampler=EpochRandomSampler(10, seed=0))
    >>> first = [b.tolist() for b in loader]
    >>> it = iter(loader); _ = next(it); state = loader.state_dict(); state
    {'epoch': 0, 'batches': 1}
    >>> resumed = ResumableDataLoader(list(range(10)), batch_size=4, sampler=EpochRandomSampler(10, seed=0))
    >>> resumed.load_state_dict(state)
    >>> [b.tolist() for b in resumed] == first[1:]
    True
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler


class EpochRandomSampler(RandomSampler):
    """A random permutation of ``range(n)`` that depends only on (``seed``, epoch).

    ``RandomSampler`` without a generator draws a fresh seed from the global RNG at each epoch, so the order
    after a resume differs from the order of the uninterrupted run. (Under DDP/FSDP ``VideoDataModule`` uses a
    ``DistributedSampler`` instead, which is seeded the same way.)

    Example:
        >>> s = EpochRandomSampler(5, seed=3)
        >>> a = list(s); s.set_epoch(1); b = list(s); s.set_epoch(0)
        >>> list(s) == a != b, sorted(a)
        (True, [0, 1, 2, 3, 4])
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(range(n))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of the next ``__iter__``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        self.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return super().__iter__()


class _SkipFirst:
    """The loader's index sampler with the batches a resumed epoch already trained left out (read at each
    ``iter``, so persistent workers, which keep the index sampler of their first epoch, see it too)."""

    def __init__(self, loader: ResumableDataLoader, inner: Iterable) -> None:
        self.loader, self.inner = loader, inner

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.inner), self.loader._take_skip(), None)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]  # the whole epoch, as Lightning expects


class ResumableDataLoader(DataLoader):
    """``DataLoader`` with Lightning's ``state_dict`` / ``load_state_dict``: where in which epoch it is.

    The state is the epoch of the sampler (``sampler.epoch``, else ``batch_sampler.epoch``, else 0) and the
    number of batches handed out since that epoch began. ``load_state_dict`` makes the next iteration of that
    same epoch skip those batches; an iteration of another epoch skips nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) from load_state_dict
        self._skipped = 0

    @property
    def epoch(self) -> int:
        for source in (self.sampler, self.batch_sampler):
            if hasattr(source, "epoch"):
                return int(source.epoch)
        return 0

    @property
    def _index_sampler(self) -> Any:  # DataLoader reads it once per iterator (and for len())
        return _SkipFirst(self, super()._index_sampler)

    def _take_skip(self) -> int:
        # may run twice for one iterator (a worker iterator's __init__ and its first _reset): same answer
        resume = self._resume
        self._skipped = resume[1] if resume is not None and resume[0] == self.epoch else 0
        return self._skipped

    def __iter__(self) -> Iterator[Any]:
        inner = super().__iter__()  # the index sampler is iterated (and the skip taken) here
        self._resume = None  # the skip applies to this iteration only
        self._consumed = self._skipped
        for batch in inner:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches": k}``: k batches of epoch e have been handed out."""
        return {"epoch": self.epoch, "batches": self._consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Skip the first ``state["batches"]`` batches of the next iteration if it is epoch ``state["epoch"]``."""
        try:
            self._resume = (int(state["epoch"]), int(state["batches"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"ResumableDataLoader: expected a state {{'epoch': int, 'batches': int}}, got {state!r}"
                             ) from err
