"""Input controls: the same eval items with the video's time order destroyed or the video removed.

* ``time``: the valid frames of each sample are permuted with a seeded, non-identity permutation; the audio
  (when decoded) is cut into as many equal windows as there are frames and the windows are permuted with the
  *same* permutation, so picture and sound stay paired but appear at the wrong times. ``timestamps`` keep
  their original order: the model is told frame ``j`` was taken at ``t_j`` while it shows the content of
  ``t_perm[j]``. A model that uses time should fall to chance on order-dependent questions.
* ``blind``: every frame is replaced by a zero (black) frame and the audio by silence of the same length;
  timestamps, masks and the prompt are unchanged. What remains is the text prior.

The permutation depends only on ``(seed, item id)``, never on the batch, so a resumed or re-batched run sees
exactly the same inputs. Identity draws are re-drawn, as for the TEMPO shuffles (``docs/methods/tempo.md``).

Example:
    >>> import torch
    >>> perm = time_permutation(4, seed=0, key="item-1")
    >>> sorted(perm.tolist()) == [0, 1, 2, 3] and perm.tolist() != [0, 1, 2, 3]
    True
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from vidtempo.data.log_mel import LOG_MEL_SILENCE
from vidtempo.data.time_order import permute_frames

CONDITIONS: tuple[str, ...] = ("normal", "time", "blind")
CONTROLS: tuple[str, ...] = ("time", "blind")
_MAX_REDRAWS = 64


def time_permutation(n: int, seed: int, key: str) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(seed, key)``; never the identity when n >= 2."""
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    identity = np.arange(n)
    perm = rng.permutation(n)
    for _ in range(_MAX_REDRAWS):
        if n < 2 or not np.array_equal(perm, identity):
            return perm
        perm = rng.permutation(n)
    return np.roll(identity, 1)  # pragma: no cover - 64 identity draws in a row


def apply_time_control(batch: Any, seed: int) -> Any:
    """Shuffle frames (and audio windows) of every sample in time, in place; timestamps untouched.

    Args:
        batch: a :class:`~vidtempo.data.collate.VideoTextBatch` (frames (B, T, 3, H, W), frame_mask (B, T),
            audio (B, S) and audio_lengths (B,) when audio is decoded).
        seed: control seed; with the item ids it fixes every permutation.

    Returns:
        The same batch, with ``meta[i]["time_permutation"]`` recording each permutation.
    """
    if batch.frames is None:
        return batch
    sizes = batch.frame_mask.sum(dim=1).tolist()  # (B,) valid frames per row
    return permute_frames(batch, [time_permutation(int(n), seed, item) for n, item in zip(sizes, batch.ids)])


def apply_blind_control(batch: Any) -> Any:
    """Replace every frame with zeros and the audio with silence, in place (shapes and masks unchanged)."""
    if batch.frames is not None:
        batch.frames.zero_()
    if batch.audio is not None:  # silence: zeros as a waveform, Whisper's floor as log-mel
        batch.audio.fill_(0.0 if batch.audio.ndim == 2 else LOG_MEL_SILENCE)
    return batch


def control_transform(condition: str, seed: int = 0) -> Callable[[Any], Any]:
    """The batch transform of one condition (``normal`` = identity).

    Raises:
        ValueError: an unknown condition.
    """
    if condition == "normal":
        return lambda batch: batch
    if condition == "time":
        return lambda batch: apply_time_control(batch, seed)
    if condition == "blind":
        return apply_blind_control
    raise ValueError(f"unknown control {condition!r}; valid: {', '.join(CONDITIONS)}")


class ControlledCollator:
    """Wrap a collator so the control is applied inside the DataLoader workers, after decoding.

    Args:
        collate: the inner collator (``VideoCollator``).
        condition: ``normal``, ``time`` or ``blind``.
        seed: control seed (``time``).

    Example:
        >>> wrapped = ControlledCollator(lambda samples: samples, "normal")
        >>> wrapped([1, 2])
        [1, 2]
    """

    def __init__(self, collate: Callable[[list[Any]], Any], condition: str, seed: int = 0) -> None:
        self.collate = collate
        self.condition = condition
        self.transform = control_transform(condition, seed)
        self.seed = seed

    def __call__(self, samples: list[Any]) -> Any:
        return self.transform(self.collate(samples))

    def __getstate__(self) -> dict[str, Any]:  # lambdas do not pickle (spawned workers)
        return {"collate": self.collate, "condition": self.condition, "seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["collate"], state["condition"], state["seed"])  # type: ignore[misc]
