"""Temporal IoU, grounding recall/mIoU and retrieval ranks: hand-computed cases and seeded property checks."""

from __future__ import annotations

import numpy as np
import pytest

from vidtempo.eval.metrics import (
    grounding_metrics,
    ranks_from_scores,
    retrieval_metrics,
    retrieval_metrics_multi,
    temporal_iou,
)

# ---------------------------------------------------------------- temporal_iou


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ((2.0, 6.0), (4.0, 8.0), 2.0 / 6.0),  # partial overlap
        ((0.0, 10.0), (0.0, 10.0), 1.0),  # identical
        ((3.0, 5.0), (0.0, 10.0), 0.2),  # pred inside gt
        ((0.0, 10.0), (3.0, 5.0), 0.2),  # gt inside pred
        ((0.0, 2.0), (5.0, 8.0), 0.0),  # disjoint
        ((0.0, 5.0), (5.0, 8.0), 0.0),  # touching at one point
        (None, (1.0, 2.0), 0.0),  # unparsable
        ((6.0, 2.0), (2.0, 6.0), 0.0),  # inverted pred
        ((2.0, 6.0), (6.0, 2.0), 0.0),  # inverted gt
        ((4.0, 4.0), (0.0, 10.0), 0.0),  # zero-length pred inside gt
        ((4.0, 4.0), (4.0, 4.0), 0.0),  # both empty at the same point
        ((float("nan"), 3.0), (0.0, 10.0), 0.0),
        ((0.0, float("inf")), (0.0, 10.0), 0.0),
        ([1, 3], np.array([2.0, 4.0]), 1.0 / 3.0),  # lists, ints and arrays are accepted
    ],
)
def test_temporal_iou_cases(pred, gt, expected) -> None:
    assert temporal_iou(pred, gt) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("bad", [(1.0, 2.0, 3.0), "1-2", (1.0,), ("a", "b"), 5.0])
def test_temporal_iou_rejects_malformed(bad) -> None:
    with pytest.raises(ValueError, match="pred"):
        temporal_iou(bad, (0.0, 1.0))


def test_temporal_iou_properties_seeded() -> None:
    """Symmetric, in [0, 1], and equal to overlap / true union whenever the intervals overlap."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        a = np.sort(rng.uniform(0, 60, 2).round(1))
        b = np.sort(rng.uniform(0, 60, 2).round(1))
        iou = temporal_iou(a, b)
        assert iou == pytest.approx(temporal_iou(b, a))
        assert 0.0 <= iou <= 1.0
        inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        if inter > 0:
            true_union = (a[1] - a[0]) + (b[1] - b[0]) - inter
            assert iou == pytest.approx(inter / true_union)
        else:
            assert iou == 0.0


# ---------------------------------------------------------------- grounding_metrics


def test_grounding_metrics_hand_computed() -> None:
    preds = [(0.0, 10.0), (0.0, 4.0), (7.0, 9.0), None]
    gts = [(0.0, 10.0), (0.0, 8.0), (0.0, 10.0), (2.0, 3.0)]
    # IoUs: 1.0, 0.5, 0.2, 0.0 (the unparsable answer stays in the denominator)
    out = grounding_metrics(preds, gts)
    assert out == pytest.approx({"R1@0.3": 0.5, "R1@0.5": 0.5, "R1@0.7": 0.25, "mIoU": 1.7 / 4})
    assert list(out) == ["R1@0.3", "R1@0.5", "R1@0.7", "mIoU"]


def test_grounding_threshold_is_inclusive_despite_float_rounding() -> None:
    # 0.3 / 1.0 is exact, but (0.1 + 0.2) is 0.30000000000000004 and 0.7 - 0.4 = 0.29999999999999993:
    # the real-number tIoU is exactly 0.3 in both, and ``iou >= m`` must count both.
    assert temporal_iou((0.4, 0.7), (0.0, 1.0)) < 0.3
    out = grounding_metrics([(0.4, 0.7), (0.0, 0.3)], [(0.0, 1.0), (0.0, 1.0)], thresholds=(0.3,))
    assert out["R1@0.3"] == 1.0


def test_grounding_keys_follow_thresholds() -> None:
    out = grounding_metrics([(0.0, 1.0)], [(0.0, 4.0)], thresholds=(0.1, 0.25, 0.5))
    assert out == {"R1@0.1": 1.0, "R1@0.25": 1.0, "R1@0.5": 0.0, "mIoU": 0.25}


def test_grounding_swap_inverted() -> None:
    preds, gts = [(8.0, 2.0)], [(2.0, 8.0)]
    assert grounding_metrics(preds, gts)["mIoU"] == 0.0
    assert grounding_metrics(preds, gts, swap_inverted=True)["mIoU"] == 1.0


def test_grounding_durations_clip_predictions_past_the_end() -> None:
    preds = [(10.0, 45.0), (-5.0, 10.0), (40.0, 50.0)]
    gts = [(10.0, 30.0), (0.0, 10.0), (20.0, 30.0)]
    plain = grounding_metrics(preds, gts)
    clipped = grounding_metrics(preds, gts, durations=[30.0, 30.0, 30.0])
    # unclipped IoUs: 20/35, 10/15, 0; clipped: (10,30) -> 1.0, (0,10) -> 1.0, (30,30) -> empty -> 0
    assert plain["mIoU"] == pytest.approx((20 / 35 + 10 / 15) / 3)
    assert clipped["mIoU"] == pytest.approx(2 / 3)
    assert clipped["R1@0.7"] == pytest.approx(2 / 3) and plain["R1@0.7"] == 0.0


def test_grounding_clipping_never_touches_the_ground_truth() -> None:
    # Charades-STA has windows ending after the video (562 of 3720): a perfect prediction loses IoU.
    out = grounding_metrics([(20.0, 35.0)], [(20.0, 35.0)], durations=[30.0])
    assert out["mIoU"] == pytest.approx(10 / 15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preds": [(0, 1)], "gts": []}, "1 predictions but 0"),
        ({"preds": [], "gts": []}, "no queries"),
        ({"preds": [(0, 1)], "gts": [(0, 1)], "thresholds": (1.5,)}, r"\[0, 1\]"),
        ({"preds": [(0, 1)], "gts": [(0, 1)], "durations": [0.0]}, "durations\\[0\\]"),
        ({"preds": [(0, 1)], "gts": [(0, 1)], "durations": [1.0, 2.0]}, "2 durations"),
        ({"preds": [(0, 1, 2)], "gts": [(0, 1)]}, "preds\\[0\\]"),
    ],
)
def test_grounding_bad_input(kwargs, match) -> None:
    preds, gts = kwargs.pop("preds"), kwargs.pop("gts")
    with pytest.raises(ValueError, match=match):
        grounding_metrics(preds, gts, **kwargs)


# ---------------------------------------------------------------- retrieval_metrics


def _sim_with_ranks(ranks: list[int], n: int) -> np.ndarray:
    """(Q, n) matrix, no ties, in which query i's diagonal item has 1-based rank ``ranks[i]``."""
    sim = np.zeros((len(ranks), n))
    for i, r in enumerate(ranks):
        others = [j for j in range(n) if j != i]
        order = others[: r - 1] + [i] + others[r - 1 :]  # best first
        sim[i, order] = np.linspace(1.0, 0.0, n)
    return sim


def test_retrieval_identity_is_perfect() -> None:
    out = retrieval_metrics(np.eye(6))
    assert out == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MedianR": 1.0, "MeanR": 1.0}


def test_retrieval_hand_computed_ranks() -> None:
    ranks = [1, 2, 5, 6, 11, 12, 3, 1]
    sim = _sim_with_ranks(ranks, 12)
    assert ranks_from_scores(sim, sim[np.arange(8), np.arange(8)]).tolist() == ranks
    out = retrieval_metrics(sim)
    assert out["R1"] == pytest.approx(25.0)
    assert out["R5"] == pytest.approx(62.5)
    assert out["R10"] == pytest.approx(75.0)
    assert out["MedianR"] == pytest.approx(4.0)  # median of 1,1,2,3,5,6,11,12
    assert out["MeanR"] == pytest.approx(41 / 8)
    assert out == retrieval_metrics(sim, tie="pessimistic")  # no ties: both policies agree


def test_retrieval_ties() -> None:
    # row 0: the diagonal ties with item 1; row 1: one item strictly better, one tie
    sim = np.array([[0.5, 0.5, 0.1], [0.9, 0.4, 0.4], [0.0, 0.0, 0.0]])
    opt = retrieval_metrics(sim, tie="optimistic")
    pes = retrieval_metrics(sim, tie="pessimistic")
    # optimistic ranks 1, 2, 1; pessimistic ranks 2, 3, 3
    assert opt["R1"] == pytest.approx(200 / 3) and opt["MeanR"] == pytest.approx(4 / 3)
    assert pes["R1"] == 0.0 and pes["MeanR"] == pytest.approx(8 / 3) and pes["MedianR"] == 3.0


def test_retrieval_constant_matrix_is_the_extreme_tie() -> None:
    sim = np.ones((20, 20))
    assert retrieval_metrics(sim)["R1"] == 100.0
    pes = retrieval_metrics(sim, tie="pessimistic")
    assert pes["R10"] == 0.0 and pes["MedianR"] == 20.0


def test_retrieval_rectangular_and_bad_input() -> None:
    assert retrieval_metrics(np.array([[1.0, 0.0, 2.0]]))["MedianR"] == 2.0
    with pytest.raises(ValueError, match="rows <= columns"):
        retrieval_metrics(np.ones((3, 2)))
    with pytest.raises(ValueError, match="tie must be one of"):
        retrieval_metrics(np.eye(2), tie="average")
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.ones(3))


# ---------------------------------------------------------------- multi-caption retrieval


def test_retrieval_multi_hand_computed() -> None:
    # 4 texts, 2 videos: texts 0,1 -> video 0; texts 2,3 -> video 1
    sim = np.array(
        [
            [0.9, 0.1],  # t0: video 0 first
            [0.2, 0.3],  # t1: video 0 second
            [0.5, 0.6],  # t2: video 1 first
            [0.8, 0.7],  # t3: video 1 second
        ]
    )
    out = retrieval_metrics_multi(sim, [0, 0, 1, 1])
    assert out["t2v"]["R1"] == 50.0 and out["t2v"]["MeanR"] == 1.5
    # video 0 column: 0.9 (t0, own) is best -> rank 1. video 1 column: 0.1, 0.3, 0.6 (own), 0.7 (own)
    # -> best own 0.7 at rank 1.
    assert out["v2t"]["R1"] == 100.0


def test_retrieval_multi_pessimistic_ignores_ties_with_own_captions() -> None:
    sim = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])  # t2 (video 1) ties video 0's captions
    owner = [0, 0, 1]
    opt = retrieval_metrics_multi(sim, owner, tie="optimistic")["v2t"]
    pes = retrieval_metrics_multi(sim, owner, tie="pessimistic")["v2t"]
    # video 0: own best 1.0, other-video t2 ties at 1.0 -> optimistic 1, pessimistic 2 (not 3)
    # video 1: own 1.0 beats 0.0, 0.0 -> rank 1
    assert opt["MeanR"] == 1.0
    assert pes["MeanR"] == 1.5


def test_retrieval_multi_reduces_to_single_caption() -> None:
    rng = np.random.default_rng(1)
    sim = rng.normal(size=(15, 15)).round(1)  # rounding creates ties
    for tie in ("optimistic", "pessimistic"):
        out = retrieval_metrics_multi(sim, list(range(15)), tie=tie)
        assert out["t2v"] == retrieval_metrics(sim, tie=tie)
        assert out["v2t"] == retrieval_metrics(sim.T, tie=tie)


def test_retrieval_multi_bad_input() -> None:
    with pytest.raises(ValueError, match=r"videos \[1\] have no caption"):
        retrieval_metrics_multi(np.ones((2, 2)), [0, 0])
    with pytest.raises(ValueError, match="must lie in"):
        retrieval_metrics_multi(np.ones((2, 2)), [0, 2])
    with pytest.raises(ValueError, match="integer video indices"):
        retrieval_metrics_multi(np.ones((2, 2)), [0])
