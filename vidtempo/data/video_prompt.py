"""One step shared by ``train``, ``eval``, ``infer`` and ``serve``: video + settings -> frames, timestamps and
prompt token ids.

Every path decodes and tokenises through :class:`~vidtempo.data.collate.VideoCollator`; what could differ is
the collator's *settings*. They are resolved here, once:

* training reads ``data.collator`` (teacher forcing);
* inference (``eval``, ``infer``, ``serve``) reads :func:`inference_collator_settings`: ``data.collator``
  overlaid with ``eval.collator``, ``generation=True``, without the training targets;
* a serving request may change the frame sampling only, through :func:`with_sampling` (``fps`` replaces
  ``num_frames``; ``max_frames`` caps either).

:func:`video_prompt` runs one sample through a collator and returns what the model would receive (for checks
such as the four-way parity test, ``tests/serving/test_parity.py``).

Example:
    >>> s = inference_collator_settings({"data": {"collator": {"num_frames": 8, "frame_size": 32}},
    ...                                  "eval": {"collator": {"num_frames": 16}}})
    >>> s["num_frames"], s["frame_size"], s["generation"]
    (16, 32, True)
    >>> r = with_sampling(s, fps=2.0, max_frames=12)
    >>> r["num_frames"], r["fps"], r["max_frames"]
    (None, 2.0, 12)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vidtempo.data.samples import ConversationSample

if TYPE_CHECKING:  # torch is imported by the collator when a sample is collated, not here
    import torch


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
    return dict(value)


def inference_collator_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``VideoCollator`` keyword arguments for answering with a recipe: ``data.collator`` overlaid with
    ``eval.collator``, ``generation=True``, without the training targets (``data.collator.targets``); ``cfg``
    is the resolved recipe as a plain dict.

    Raises:
        ValueError: ``data``, ``data.collator``, ``eval`` or ``eval.collator`` is not a mapping (named).
    """
    data = _mapping(cfg.get("data"), "data")
    section = _mapping(cfg.get("eval"), "eval")
    out = {
        **_mapping(data.get("collator"), "data.collator"),
        **_mapping(section.get("collator"), "eval.collator"),
        "generation": True,
    }
    out.pop("targets", None)  # per-frame training targets: nothing reads them when answering
    return out


def with_sampling(settings: Mapping[str, Any], *, fps: float | None = None, max_frames: int | None = None
                  ) -> dict[str, Any]:  # fmt: skip
    """``settings`` with a request's frame sampling: ``fps`` replaces ``num_frames`` (the two exclude each
    other), ``max_frames`` caps the frame count of either. None keeps the recipe's value."""
    out = dict(settings)
    if fps is not None:
        out["fps"], out["num_frames"] = float(fps), None
    if max_frames is not None:
        out["max_frames"] = int(max_frames)
    return out


def sampling_key(settings: Mapping[str, Any]) -> tuple:
    """A hashable key of collator settings (requests with equal keys can share one collator and one batch)."""
    return tuple(sorted((k, repr(v)) for k, v in settings.items()))


@dataclass
class VideoPrompt:
    """What one sample becomes before the model.

    Attributes:
        frames: (T, 3, H, W) float32 in [0, 1].
        timestamps: (T,) float32 seconds of each frame.
        input_ids: the prompt's token ids, ``VIDEO_TOKEN_INDEX`` where the video goes (with the answer when the
            collator teacher-forces, i.e. ``generation=False``).
        query: the first user turn without the placeholder (what query-aware compressors read).
    """

    frames: torch.Tensor
    timestamps: torch.Tensor
    input_ids: list[int]
    query: str


def video_prompt(collator: Any, sample: ConversationSample) -> VideoPrompt:
    """Run one sample through ``collator`` (a ``VideoCollator``) and keep its row.

    Raises:
        ValueError: the sample was skipped (its video did not decode, or it is over-long); the message names
            the sample and the reason.
    """
    import torch

    batch = collator([sample])
    if batch.skipped:
        skip = batch.skipped[0]
        raise ValueError(f"sample '{skip.id}' ({skip.path}): {skip.reason}")
    n = int(batch.frame_mask[0].sum()) if batch.frame_mask is not None else 0
    frames = batch.frames[0, :n] if batch.frames is not None else torch.zeros(0)
    times = batch.timestamps[0, :n] if batch.timestamps is not None else torch.zeros(0)
    ids = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    return VideoPrompt(frames, times, ids, batch.queries[0] if batch.queries else "")
