"""First-fit-decreasing bin packing, shared by token-budget batching and packed LLM rows.

Example:
    >>> first_fit_decreasing([0, 1, 2, 3], [5, 3, 4, 2], capacity=7)
    [[0, 3], [2, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence


def first_fit_decreasing(items: Sequence[int], sizes: Sequence[int], capacity: int,
                         max_items: int | None = None) -> list[list[int]]:  # fmt: skip
    """Place ``items`` (indices into ``sizes``), largest first (ties keep their order in ``items``), each into
    the first bin whose total stays within ``capacity`` and that holds fewer than ``max_items`` items. Every
    item fits somewhere: one larger than ``capacity`` gets a bin of its own (callers refuse those first)."""
    bins: list[list[int]] = []
    used: list[int] = []
    cap = max_items or len(items) or 1
    for i in sorted(items, key=lambda i: -sizes[i]):
        n = sizes[i]
        slot = next((b for b, u in enumerate(used) if u + n <= capacity and len(bins[b]) < cap), None)
        if slot is None:
            bins.append([])
            used.append(0)
            slot = len(bins) - 1
        bins[slot].append(i)
        used[slot] += n
    return bins
