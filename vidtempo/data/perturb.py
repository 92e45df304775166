"""TEMPO / TEMPLE time-order perturbations of an ordered sequence (events, clip captions, seconds of video).

TEMPLE builds rejected answers by perturbing the *order* of a video's units before a model writes the answer
(``drop`` / ``shuffle`` / ``reverse`` at magnitudes 16, 8, 4, 2; see ``docs/methods/tempo.md``):

* ``drop(m)`` keeps ``max(1, n // m)`` units chosen at random (order kept);
* ``shuffle(m)`` / ``reverse(m)`` permute / reverse blocks of ``g = max(1, n // m)`` consecutive units.

Larger ``m`` = stronger corruption = easier pair. Shuffles that leave the order unchanged are re-drawn (a
deliberate deviation from the released TEMPLE code, which keeps them). The same rules serve the self-generated
pairs of :mod:`vidtempo.prefgen` and the TempoSynth pairs of :mod:`vidtempo.synth.pairs`.

Dense captions (``"s - e seconds, sentence"`` per line, sorted by time) are perturbed event-wise: dropped
lines vanish; moved sentences take the time stamps of the slots they land in, so the rejected caption tells the
events in the wrong order at plausible times.

Example:
    >>> import numpy as np
    >>> perturb_indices(8, "reverse", 4, np.random.default_rng(0))  # blocks of 2, reversed
    [6, 7, 4, 5, 2, 3, 0, 1]
    >>> perturb_indices(8, "drop", 4, np.random.default_rng(0))  # keep 8 // 4 = 2 events, in order
    [5, 7]
    >>> events = parse_dense_caption("0 - 1 seconds, a\\n1 - 2 seconds, b", "example")
    >>> perturb_caption(events, "reverse", [1, 0])
    '0 - 1 seconds, b\\n1 - 2 seconds, a'
"""

from __future__ import annotations

import zlib

import numpy as np

PERTURBATIONS: tuple[str, ...] = ("drop", "shuffle", "reverse")
DEFAULT_MAGNITUDES: tuple[int, ...] = (16, 8, 4, 2)
MAX_REDRAWS = 100


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and the CRC32 of each key (stable across processes and runs).

    Example:
        >>> int(rng_for(0, "v1", "shuffle").integers(100)) == int(rng_for(0, "v1", "shuffle").integers(100))
        True
    """
    return np.random.default_rng([int(seed), *(zlib.crc32(k.encode()) for k in keys)])


def perturb_indices(n: int, kind: str, magnitude: int, rng: np.random.Generator) -> list[int] | None:
    """Indices of ``n`` ordered units after a TEMPLE perturbation; None when it cannot change the order.

    Args:
        n: number of units (clip captions, events, seconds of video).
        kind: ``drop``, ``shuffle`` or ``reverse``.
        magnitude: m >= 1; drop keeps ``max(1, n // m)`` units, shuffle/reverse move blocks of that size.
        rng: random source (drop and shuffle).
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation '{kind}'; valid: {', '.join(PERTURBATIONS)}")
    if magnitude < 1:
        raise ValueError(f"perturbation magnitude must be >= 1, got {magnitude}")
    size = max(1, n // magnitude)
    if kind == "drop":
        return sorted(int(i) for i in rng.choice(n, size=size, replace=False)) if size < n else None
    blocks = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    if len(blocks) < 2:
        return None
    if kind == "reverse":
        return [i for block in reversed(blocks) for i in block]
    for _ in range(MAX_REDRAWS):  # re-draw identity shuffles
        order = rng.permutation(len(blocks))
        if any(int(o) != k for k, o in enumerate(order)):
            return [i for o in order for i in blocks[int(o)]]
    return None  # pragma: no cover - 2+ blocks give a non-identity draw with probability ~1


def parse_dense_caption(text: str, where: str) -> list[tuple[str, str]]:
    """``"s - e seconds, sentence"`` lines -> [(time stamp, sentence)]; ``where`` names the source in errors."""
    events = []
    for n, line in enumerate(text.strip().splitlines(), 1):
        stamp, sep, sentence = line.partition(", ")
        if not sep or not stamp.endswith("seconds"):
            raise ValueError(f"{where}: line {n} is not 's - e seconds, sentence': {line!r}")
        events.append((stamp, sentence))
    return events


def perturb_caption(events: list[tuple[str, str]], kind: str, order: list[int]) -> str:
    """The rejected dense caption: dropped lines vanish; moved sentences take the slots' time stamps."""
    if kind == "drop":
        return "\n".join(f"{events[i][0]}, {events[i][1]}" for i in order)
    return "\n".join(f"{events[slot][0]}, {events[i][1]}" for slot, i in enumerate(order))
