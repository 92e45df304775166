"""Temporal-grounding and retrieval metrics on plain Python / NumPy inputs.

Conventions (see ``docs/eval.md``):

* Temporal IoU uses the hull as union, ``max(ends) - min(starts)``, as the LLM-era grounding scripts do
  (TimeChat ``metrics/tvg/eval_tvg.py``, VTimeLLM ``eval/eval.py``, lmms-eval ``charades_sta``). It equals the
  true union whenever the intervals overlap, and the IoU is 0 otherwise.
* Grounding metrics are fractions in [0, 1]; a ``None`` prediction (unparsable answer) stays in the
  denominator with IoU 0.
* Retrieval metrics follow CLIP4Clip's ``compute_metrics`` names (R1/R5/R10 in percent, MedianR/MeanR
  1-based) but resolve ties explicitly (``"optimistic"`` or ``"pessimistic"``) instead of through sort order.

Example:
    >>> temporal_iou((2.0, 6.0), (4.0, 8.0))
    0.3333333333333333
    >>> grounding_metrics([(0.0, 5.0), None], [(0.0, 10.0), (1.0, 2.0)])["R1@0.5"]
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Interval = tuple[float, float]
TIE_POLICIES = ("optimistic", "pessimistic")
RECALL_KS = (1, 5, 10)
# Absolute tolerance of the ``iou >= m`` test in :func:`grounding_metrics`: a tIoU that is exactly on a
# threshold in real numbers (0.1 s annotations make this common) must not flip on float rounding.
IOU_ATOL = 1e-9


def _as_interval(x: Any, name: str) -> Interval | None:
    """``(start, end)`` as floats; ``None`` stays ``None``; a malformed value raises ``ValueError``."""
    if x is None:
        return None
    if isinstance(x, str) or not isinstance(x, Sequence | np.ndarray) or len(x) != 2:
        raise ValueError(f"{name}: expected an interval (start, end) in seconds or None, got {x!r}")
    try:
        start, end = float(x[0]), float(x[1])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: interval bounds must be numbers, got {x!r}") from err
    return start, end


def _valid(iv: Interval) -> bool:
    """Finite and strictly positive length (an inverted or empty interval is not valid)."""
    return math.isfinite(iv[0]) and math.isfinite(iv[1]) and iv[1] > iv[0]


def temporal_iou(pred: Sequence[float] | None, gt: Sequence[float]) -> float:
    """Temporal IoU of two intervals in seconds, with the hull ``max(ends) - min(starts)`` as union.

    Args:
        pred: predicted ``(start, end)``, or ``None`` for an unparsable answer.
        gt: ground-truth ``(start, end)``.

    Returns:
        IoU in [0, 1]. 0 when ``pred`` is ``None`` or either interval is inverted, empty or not finite.

    Raises:
        ValueError: an interval that is not a pair of numbers.

    Example:
        >>> temporal_iou((0, 10), (5, 15))
        0.3333333333333333
        >>> temporal_iou((5, 2), (0, 10)), temporal_iou(None, (0, 1))
        (0.0, 0.0)
    """
    p = _as_interval(pred, "pred")
    g = _as_interval(gt, "gt")
    if p is None or g is None or not _valid(p) or not _valid(g):
        return 0.0
    inter = min(p[1], g[1]) - max(p[0], g[0])
    if inter <= 0:
        return 0.0
    return inter / (max(p[1], g[1]) - min(p[0], g[0]))


def _threshold_key(m: float) -> str:
    return f"R1@{m:g}"


def _prepare_pred(pred: Interval | None, *, swap_inverted: bool, duration: float | None) -> Interval | None:
    """Optionally swap an inverted prediction, then clip it to ``[0, duration]``."""
    if pred is None:
        return None
    start, end = pred
    if swap_inverted and start > end:
        start, end = end, start
    if duration is not None:
        start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
    return start, end


def grounding_ious(
    preds: Sequence[Sequence[float] | None],
    gts: Sequence[Sequence[float]],
    *,
    swap_inverted: bool = False,
    durations: Sequence[float] | None = None,
) -> list[float]:
    """Per-query IoUs, after the optional swap and clipping of :func:`grounding_metrics`."""
    if len(preds) != len(gts):
        raise ValueError(f"grounding: {len(preds)} predictions but {len(gts)} ground-truth intervals")
    if durations is not None and len(durations) != len(gts):
        raise ValueError(f"grounding: {len(durations)} durations but {len(gts)} ground-truth intervals")
    ious = []
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        duration = None if durations is None else float(durations[i])
        if duration is not None and not duration > 0:
            raise ValueError(f"grounding: durations[{i}] must be > 0 seconds, got {duration}")
        p = _prepare_pred(_as_interval(pred, f"preds[{i}]"), swap_inverted=swap_inverted, duration=duration)
        ious.append(temporal_iou(p, _as_interval(gt, f"gts[{i}]")))
    return ious


def summarize_ious(ious: Sequence[float], thresholds: Sequence[float], *, atol: float = IOU_ATOL) -> dict:
    """``{"R1@m": fraction with iou >= m, ..., "mIoU": mean}`` over all queries."""
    if len(ious) == 0:
        raise ValueError("grounding: no queries to score (empty predictions and ground truth)")
    for m in thresholds:
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"grounding: IoU thresholds must lie in [0, 1], got {m}")
    arr = np.asarray(ious, dtype=np.float64)  # (N,)
    out = {_threshold_key(m): float(np.mean(arr >= m - atol)) for m in thresholds}
    out["mIoU"] = float(arr.mean())
    return out


def grounding_metrics(
    preds: Sequence[Sequence[float] | None],
    gts: Sequence[Sequence[float]],
    *,
    thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    swap_inverted: bool = False,
    durations: Sequence[float] | None = None,
) -> dict[str, float]:
    """Recall@1 at IoU thresholds and mean IoU, as fractions in [0, 1].

    Args:
        preds: one top-1 ``(start, end)`` per query in seconds, ``None`` for an unparsable answer
            (kept in the denominator with IoU 0).
        gts: ground-truth ``(start, end)`` per query.
        thresholds: IoU thresholds ``m``; a query counts when ``iou >= m`` (to within 1e-9).
        swap_inverted: swap a prediction whose start is after its end (otherwise its IoU is 0).
        durations: video lengths in seconds; predictions are clipped to ``[0, duration]`` first.
            The ground truth is never clipped.

    Returns:
        ``{"R1@0.3": ..., "R1@0.5": ..., "R1@0.7": ..., "mIoU": ...}`` (keys follow ``thresholds``).

    Raises:
        ValueError: different lengths, no queries, a malformed interval or a threshold outside [0, 1].

    Example:
        >>> grounding_metrics([(0, 4), (9, 1)], [(0, 8), (0, 10)], swap_inverted=True)
        {'R1@0.3': 1.0, 'R1@0.5': 1.0, 'R1@0.7': 0.5, 'mIoU': 0.65}
    """
    ious = grounding_ious(preds, gts, swap_inverted=swap_inverted, durations=durations)
    return summarize_ious(ious, thresholds)


# ----------------------------------------------------------------------------------------------------
# Retrieval
# ----------------------------------------------------------------------------------------------------


def _check_tie(tie: str) -> None:
    if tie not in TIE_POLICIES:
        raise ValueError(f"retrieval: tie must be one of {TIE_POLICIES}, got {tie!r}")


def as_similarity_matrix(sim: Any) -> np.ndarray:
    arr = np.asarray(sim, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"retrieval: sim must be a non-empty 2-D matrix (queries x items), got shape {arr.shape}"
        )
    if np.isnan(arr).any():
        raise ValueError("retrieval: sim contains NaN; ranks would be undefined")
    return arr


def ranks_from_scores(scores: np.ndarray, target: np.ndarray, *, tie: str = "optimistic") -> np.ndarray:
    """1-based rank of ``target[i]`` (a score) among ``scores[i]`` (a row), ties resolved by ``tie``.

    Optimistic: ``1 + #(score > target)``. Pessimistic: ``#(score >= target)``, i.e. the item is ranked
    after every other item with the same score (it is itself counted once).

    Args:
        scores: (Q, N) scores of the N candidates per query.
        target: (Q,) score of the correct candidate per query (must be one of the row's scores).
    """
    _check_tie(tie)
    target = target[:, None]  # (Q, 1)
    if tie == "optimistic":
        return 1 + (scores > target).sum(axis=1)
    return (scores >= target).sum(axis=1)


def rank_summary(ranks: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """``R{k}`` (percent of ranks <= k), ``MedianR`` and ``MeanR`` (1-based) of a rank vector."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"R{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    out["MedianR"] = float(np.median(ranks))
    out["MeanR"] = float(np.mean(ranks))
    return out


def retrieval_metrics(sim: Any, *, tie: str = "optimistic") -> dict[str, float]:
    """Recall@{1,5,10} (percent), median and mean rank (1-based) with ground truth on the diagonal.

    Args:
        sim: (Q, N) similarities, rows are queries, ``sim[i, i]`` is the correct item of query ``i``
            (Q <= N). Pass ``sim.T`` for the other direction.
        tie: ``"optimistic"`` (the correct item wins every tie) or ``"pessimistic"`` (loses every tie).

    Returns:
        ``{"R1", "R5", "R10", "MedianR", "MeanR"}``.

    Raises:
        ValueError: unknown ``tie``, a matrix that is not 2-D, has more rows than columns, or has NaN.

    Example:
        >>> retrieval_metrics([[1.0, 0.0], [1.0, 1.0]], tie="pessimistic")["R1"]
        50.0
    """
    _check_tie(tie)
    arr = as_similarity_matrix(sim)
    q, n = arr.shape
    if q > n:
        raise ValueError(f"retrieval: {q} queries but only {n} items; the diagonal needs rows <= columns")
    target = arr[np.arange(q), np.arange(q)]  # (Q,)
    return rank_summary(ranks_from_scores(arr, target, tie=tie))


def retrieval_metrics_multi(
    sim: Any, text_to_video: Sequence[int], *, tie: str = "optimistic"
) -> dict[str, dict[str, float]]:
    """Retrieval with several captions per video (MSR-VTT full test, ActivityNet paragraphs split).

    Text-to-video: each text is a query, ranked among all videos. Video-to-text: each video is a query,
    ranked among all texts; its rank is that of its best-ranked caption (the LAVIS / ALBEF convention,
    ``lavis/tasks/retrieval.py::_report_metrics``). Under ``"pessimistic"`` only captions of *other*
    videos that tie with the best caption count against it.

    Args:
        sim: (T, V) text-video similarities.
        text_to_video: length T, the video index (0..V-1) of each text; every video needs >= 1 text.
        tie: ``"optimistic"`` or ``"pessimistic"``.

    Returns:
        ``{"t2v": {...}, "v2t": {...}}``, each with R1/R5/R10/MedianR/MeanR.

    Example:
        >>> sim = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]
        >>> retrieval_metrics_multi(sim, [0, 0, 1])["v2t"]["R1"]
        100.0
    """
    _check_tie(tie)
    arr = as_similarity_matrix(sim)
    t, v = arr.shape
    owner = np.asarray(text_to_video)
    if owner.shape != (t,) or not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(
            f"retrieval: text_to_video must list {t} integer video indices, got shape {owner.shape}"
        )
    if t and (owner.min() < 0 or owner.max() >= v):
        raise ValueError(f"retrieval: text_to_video values must lie in [0, {v - 1}]")
    missing = sorted(set(range(v)) - set(owner.tolist()))
    if missing:
        raise ValueError(f"retrieval: videos {missing[:10]} have no caption in text_to_video")

    t2v = ranks_from_scores(arr, arr[np.arange(t), owner], tie=tie)  # (T,)

    own = owner[None, :] == np.arange(v)[:, None]  # (V, T) True where text belongs to video
    cols = arr.T  # (V, T)
    best = np.where(own, cols, -np.inf).max(axis=1)  # (V,) best caption score per video
    if tie == "optimistic":
        v2t = 1 + (cols > best[:, None]).sum(axis=1)
    else:
        v2t = 1 + ((cols >= best[:, None]) & ~own).sum(axis=1)
    return {"t2v": rank_summary(t2v), "v2t": rank_summary(v2t)}
