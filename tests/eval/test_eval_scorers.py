"""Named scoring policies: hand-computed reports and cross-checks between strict and official numbers."""

from __future__ import annotations

import numpy as np
import pytest

from vidtempo.eval.metrics import retrieval_metrics
from vidtempo.eval.scorers import (
    MC_POLICIES,
    GroundingRecord,
    MCRecord,
    clip4clip_metrics,
    egoschema_subset_report,
    first_interval,
    grounding_report,
    multiple_choice_report,
    retrieval_report,
    score_grounding,
    score_multiple_choice,
)

# ---------------------------------------------------------------- multiple choice


def _videomme_like() -> list[MCRecord]:
    return [
        MCRecord("C. Berries.", "C", task="Counting Problem", duration="short", category="Knowledge", id="1"),
        MCRecord(
            "Answer: C. Jade.", "C", task="Object Recognition", duration="short", category="Knowledge", id="2"
        ),
        MCRecord(
            "I really cannot tell from these frames what happens here.",
            "B",
            task="Counting Problem",
            duration="medium",
            category="Sports Competition",
            id="3",
        ),
        MCRecord(
            "D", "A", task="Object Recognition", duration="medium", category="Sports Competition", id="4"
        ),
        MCRecord("b", "B", task="Counting Problem", duration="long", category="Knowledge", id="5"),
    ]


def test_videomme_strict_vs_official_hand_computed() -> None:
    rep = multiple_choice_report(_videomme_like(), "videomme")
    strict, official = rep["strict"], rep["official"]
    lmms = rep["other"]["lmms_eval_videomme"]
    # strict: C ok, C ok, None wrong, D wrong, B ok -> 3/5
    assert (strict["correct"], strict["denominator"], strict["unparsed"]) == (3, 5, 1)
    assert strict["accuracy"] == pytest.approx(60.0)
    # official regex: C ok, "A" (of "Answer") wrong, "" dropped, D wrong, "" (lower case) dropped -> 1/3
    assert (official["correct"], official["denominator"], official["unparsed"]) == (1, 3, 2)
    assert official["accuracy"] == pytest.approx(100 / 3)
    # lmms-eval: same regex, unparsed counted wrong -> 1/5
    assert lmms["accuracy"] == pytest.approx(20.0)
    assert [i["parsed"] for i in official["items"]] == ["C", "A", None, "D", None]
    assert rep["official_policy"] == "videomme_official"


def test_videomme_breakdowns() -> None:
    official = multiple_choice_report(_videomme_like(), "videomme")["official"]
    assert official["per_duration"]["short"]["accuracy"] == 50.0
    assert official["per_duration"]["medium"] == {
        "accuracy": 0.0,
        "correct": 0,
        "answered": 1,
        "unparsed": 1,
        "total": 2,
        "denominator": 1,
    }
    assert official["per_duration"]["long"]["denominator"] == 0  # all dropped -> 0.0, as the script prints
    assert official["per_duration"]["long"]["accuracy"] == 0.0
    assert official["per_category"]["Knowledge"]["accuracy"] == 50.0
    assert set(official["per_task"]) == {"Counting Problem", "Object Recognition"}


def test_official_vs_lmms_policy_cross_check_seeded() -> None:
    """Same extractor, different denominators: correct counts agree and official >= lmms-eval."""
    rng = np.random.default_rng(3)
    pool = ["A", "B.", "(C)", "D. text", "I do not know the answer to this question at all really", "", "c"]
    for _ in range(30):
        records = [MCRecord(str(rng.choice(pool)), str(rng.choice(list("ABCD")))) for _ in range(25)]
        off = score_multiple_choice(records, "videomme_official")
        lmms = score_multiple_choice(records, "lmms_eval_videomme")
        assert off["correct"] == lmms["correct"]
        assert off["denominator"] == lmms["answered"] and lmms["denominator"] == 25
        assert off["accuracy"] >= lmms["accuracy"] - 1e-12
        if lmms["unparsed"] == 0:
            assert off["accuracy"] == pytest.approx(lmms["accuracy"])


def test_mvbench_task_mean_vs_micro() -> None:
    recs = [MCRecord("A) x", "A", task="Action Sequence")] * 3 + [
        MCRecord("B) y", "A", task="Action Sequence")
    ]
    recs += [MCRecord("C) z", "D", task="Unexpected Action")]
    rep = multiple_choice_report(recs, "mvbench")
    # per task: 75% and 0% -> mean 37.5; micro 3/5 = 60
    assert rep["official"]["accuracy"] == pytest.approx(37.5)
    assert rep["official"]["micro_accuracy"] == pytest.approx(60.0)
    assert rep["strict"]["accuracy"] == pytest.approx(37.5)


def test_mvbench_official_quirk_differs_from_strict() -> None:
    recs = [MCRecord("a man opens the door", "A", task="t"), MCRecord(" (B) leading space", "C", task="t")]
    rep = multiple_choice_report(recs, "mvbench")
    assert rep["official"]["correct"] == 2  # both quirks count as correct in the reference check
    assert rep["strict"]["correct"] == 0  # article, and B != C


def test_score_multiple_choice_errors() -> None:
    with pytest.raises(ValueError, match="unknown multiple-choice policy 'nope'"):
        score_multiple_choice([MCRecord("A", "A")], "nope")
    with pytest.raises(ValueError, match="no records"):
        score_multiple_choice([])
    with pytest.raises(TypeError, match=r"records\[0\]"):
        score_multiple_choice([{"prediction": "A", "answer": "A"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"records\[0\] \('x'\): answer must be a letter"):
        score_multiple_choice([MCRecord("A", "(A) the man", id="x")])
    with pytest.raises(ValueError, match="needs a task"):
        score_multiple_choice([MCRecord("A", "A")], average="task_mean")
    with pytest.raises(ValueError, match="unknown multiple-choice benchmark"):
        multiple_choice_report([MCRecord("A", "A")], "mmlu")
    assert set(MC_POLICIES) >= {"strict", "videomme_official", "lmms_eval_videomme", "mvbench_official"}


def test_egoschema_subset_report_synthetic() -> None:
    answers = {"q1": 0, "q2": 4, "q3": 2, "q4": 1}
    preds = {"q1": "A. He cooks.", "q2": 4, "q3": "The answer is (D)", "extra": "A"}  # q4 missing
    rep = egoschema_subset_report(preds, answers)
    assert rep["strict"]["accuracy"] == pytest.approx(50.0)  # q1, q2 right; q3 wrong; q4 missing = wrong
    assert rep["official"]["denominator"] == 4
    assert (rep["missing"], rep["ignored"], rep["subset_size"]) == (1, 1, 4)
    # lmms-eval exact match: "A. He cooks." is no bare letter (no options given) -> wrong; "E" exact -> right
    assert rep["other"]["egoschema_lmms_eval"]["correct"] == 1


# ---------------------------------------------------------------- grounding


def test_first_interval_forms() -> None:
    assert first_interval(None) is None
    assert first_interval([]) is None
    assert first_interval([[1, 2], [3, 4]]) == (1.0, 2.0)
    assert first_interval([5, 2]) == (5.0, 2.0)  # given intervals are not reordered
    assert first_interval("from 5 to 2 s") == (2.0, 5.0)  # parsed text is
    with pytest.raises(ValueError, match="cannot read an interval"):
        first_interval([1, 2, 3])


def test_score_grounding_strict_vs_timechat() -> None:
    recs = [
        GroundingRecord((0.0, 1.0), [[0.4, 0.7]], id="boundary"),  # real tIoU 0.3, float 0.29999999999999993
        GroundingRecord((0.0, 10.0), [], id="empty"),
        GroundingRecord((0.0, 10.0), [[8.0, 2.0]], id="inverted"),
        GroundingRecord((0.0, 10.0), [[0.0, 10.0], [50.0, 60.0]], id="first-of-two"),
    ]
    strict = score_grounding(recs, "strict")
    timechat = score_grounding(recs, "timechat")
    assert strict["R1@0.3"] == 50.0  # boundary counts
    assert timechat["R1@0.3"] == 25.0  # TimeChat's float comparison misses it
    assert strict["R1@0.7"] == timechat["R1@0.7"] == 25.0
    assert "mIoU" in strict and "mIoU" not in timechat
    assert strict["unparsed"] == 1 and strict["n"] == 4
    assert [i["iou"] for i in strict["items"]][1:] == [0.0, 0.0, 1.0]


def test_score_grounding_vtimellm() -> None:
    recs = [
        GroundingRecord((10.0, 20.0), "During frames 25 to 50.", duration=40.0),  # pred .25-.50 vs gt .25-.5
        GroundingRecord((0.0, 30.0), "from 00 and 33", duration=90.0),  # iou 0.33/0.3333 -> 0.99
        GroundingRecord((0.0, 30.0), "from 0 to 30 seconds", duration=90.0),  # not relative indices -> 0
    ]
    out = score_grounding(recs, "vtimellm")
    assert [i["iou"] for i in out["items"]] == [1.0, 0.99, 0.0]
    assert out["mIoU"] == pytest.approx(100 * 1.99 / 3)
    with pytest.raises(ValueError, match="needs a duration"):
        score_grounding([GroundingRecord((0, 1), "from 00 to 10")], "vtimellm")


def test_grounding_report_has_both_numbers() -> None:
    recs = [GroundingRecord((0.0, 10.0), "0 - 5 seconds"), GroundingRecord((0.0, 10.0), "no idea")]
    rep = grounding_report(recs, "activitynet_grounding")
    assert rep["strict"]["R1@0.5"] == rep["official"]["R1@0.5"] == 50.0
    assert rep["strict"]["mIoU"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="unknown grounding policy"):
        score_grounding(recs, "lmms")
    with pytest.raises(ValueError, match="unknown grounding benchmark"):
        grounding_report(recs, "qvhighlights")


# ---------------------------------------------------------------- retrieval


def test_clip4clip_tie_expansion_hand_computed() -> None:
    sim = np.array([[1.0, 1.0], [0.0, 1.0]])
    # row 0 contributes ranks 1 and 2 (tie), row 1 rank 1 -> 3 entries
    out = clip4clip_metrics(sim)
    assert out["R1"] == pytest.approx(200 / 3)
    assert out["MeanR"] == pytest.approx(4 / 3) and out["MedianR"] == 1.0
    assert retrieval_metrics(sim, tie="pessimistic")["R1"] == 50.0


def test_clip4clip_equals_tie_policies_without_ties() -> None:
    rng = np.random.default_rng(7)
    sim = rng.normal(size=(30, 30))
    assert clip4clip_metrics(sim) == pytest.approx(retrieval_metrics(sim))
    assert clip4clip_metrics(sim) == pytest.approx(retrieval_metrics(sim, tie="pessimistic"))


def test_retrieval_report_single_and_multi() -> None:
    sim = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.9]])
    rep = retrieval_report(sim)
    assert rep["official_policy"] == "clip4clip_compute_metrics"
    assert rep["strict"]["t2v"]["R1"] == pytest.approx(200 / 3)  # row 0 loses its tie
    assert rep["optimistic"]["t2v"]["R1"] == 100.0
    assert rep["strict"]["v2t"] == retrieval_metrics(sim.T, tie="pessimistic")
    multi = retrieval_report(np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.7]]), [0, 0, 1])
    assert multi["official_policy"] == "optimistic_ties"
    assert multi["strict"]["v2t"]["R1"] == 100.0
    with pytest.raises(ValueError, match="square"):
        retrieval_report(np.ones((2, 3)))


def test_strict_grounding_reads_time_token_answers_as_seconds() -> None:
    """answer_time_format: time_tokens answers (100 bins over the clip) score against GT seconds."""
    from vidtempo.data.timestamps import CODECS
    from vidtempo.eval.scorers import GroundingRecord, score_grounding

    answer = f"It happens {CODECS['time_tokens'].render(10.0, 20.0, 50.0)}."  # from <t_20> to <t_40>
    assert answer == "It happens from <t_20> to <t_40>."
    recs = [GroundingRecord((10.0, 20.0), answer, duration=50.0, id="a"),
            GroundingRecord((10.0, 20.0), answer, id="no-duration"),
            GroundingRecord((10.0, 20.0), "from 10 to 20 seconds", duration=50.0, id="seconds")]  # fmt: skip
    out = score_grounding(recs, "strict")
    assert out["items"][0]["parsed"] == [10.25, 20.25] and out["items"][0]["iou"] == pytest.approx(9.75 / 10.25)
    assert out["items"][1]["parsed"] is None and out["items"][2]["parsed"] == [10.0, 20.0]
