"""Scorers on the real annotation files in ``../shared/data/annotations`` (skipped when absent).

Numbers checked here are documented in ``docs/eval.md``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from vidtempo.data.errors import AnnotationError
from vidtempo.eval.metrics import grounding_metrics, temporal_iou
from vidtempo.eval.parsing import LETTERS
from vidtempo.eval.scorers import (
    egoschema_subset_report,
    grounding_report,
    load_egoschema_answers,
    load_timechat_example,
    load_videomme_results,
    multiple_choice_report,
)


def _annotations() -> Path:
    shared = Path(os.environ.get("VIDTEMPO_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
    root = shared / "data" / "annotations"
    if not root.is_dir():
        pytest.skip(f"shared annotations not found at {root} (set VIDTEMPO_SHARED)")
    return root


@pytest.fixture(scope="module")
def ann() -> Path:
    return _annotations()


# ---------------------------------------------------------------- TimeChat Charades-STA example


@pytest.fixture(scope="module")
def timechat(ann: Path):
    folder = ann / "charades_sta" / "timechat_tvg_example"
    return load_timechat_example(folder / "example_pred_file.json", folder / "example_gt_file.json")


def test_timechat_example_reproduces_published_numbers(timechat) -> None:
    assert len(timechat) == 500
    rep = grounding_report(timechat, "charades_sta")
    official = rep["official"]
    assert rep["official_policy"] == "timechat"
    # eval_tvg.py --sample prints 9.0 / 3.4 / 1.4 (45, 17 and 7 hits of 500, empties kept)
    assert official["R1@0.3"] == pytest.approx(9.0)
    assert official["R1@0.5"] == pytest.approx(3.4)
    assert official["R1@0.7"] == pytest.approx(1.4)
    assert official["unparsed"] == 280
    strict = rep["strict"]
    assert [strict[k] for k in ("R1@0.3", "R1@0.5", "R1@0.7")] == pytest.approx([9.0, 3.4, 1.4])
    assert strict["mIoU"] == pytest.approx(6.2998, abs=1e-3)


def test_timechat_example_independent_recount(timechat) -> None:
    """Recount with TimeChat's own formula written inline, and the answered-only variant."""
    hits = {0.3: 0, 0.5: 0, 0.7: 0}
    answered = 0
    for rec in timechat:
        if not rec.prediction:
            continue
        answered += 1
        (ps, pe), (gs, ge) = rec.prediction[0], rec.gt
        iou = max(min(pe, ge) - max(ps, gs), 0) / (max(pe, ge) - min(ps, gs))
        assert iou == pytest.approx(temporal_iou((ps, pe), (gs, ge)))
        for m in hits:
            hits[m] += iou >= m
    assert answered == 220 and hits == {0.3: 45, 0.5: 17, 0.7: 7}
    # dropping the 280 empty answers instead would report 20.5 / 7.7 / 3.2
    kept = [r for r in timechat if r.prediction]
    dropped = grounding_metrics([r.prediction[0] for r in kept], [r.gt for r in kept])
    assert [round(100 * dropped[k], 1) for k in ("R1@0.3", "R1@0.5", "R1@0.7")] == [20.5, 7.7, 3.2]


def test_timechat_loader_errors(ann: Path, tmp_path: Path) -> None:
    folder = ann / "charades_sta" / "timechat_tvg_example"
    with pytest.raises(AnnotationError, match="use sample=True"):
        load_timechat_example(
            folder / "example_pred_file.json", folder / "example_gt_file.json", sample=False
        )
    bad = tmp_path / "pred.json"
    bad.write_text(json.dumps({"999999": {"timestamp": []}}))
    with pytest.raises(AnnotationError, match="not in"):
        load_timechat_example(bad, folder / "example_gt_file.json")
    bad.write_text(json.dumps({"1": {"no_timestamp": []}}))
    with pytest.raises(AnnotationError, match="missing or malformed"):
        load_timechat_example(bad, folder / "example_gt_file.json")


# ---------------------------------------------------------------- Charades-STA test split


def test_charades_sta_windows_past_the_video_end(ann: Path) -> None:
    """Predictions equal to the GT, clipped to the real durations: exactly the 562 windows that end after
    the video lose IoU (the GT itself is never clipped)."""
    with open(ann / "charades_sta" / "Charades_v1_test.csv", newline="", encoding="utf-8") as f:
        length = {row["id"]: float(row["length"]) for row in csv.DictReader(f)}
    gts, durations = [], []
    for line in (ann / "charades_sta" / "charades_sta_test.txt").read_text(encoding="utf-8").splitlines():
        head, _sentence = line.split("##", 1)
        vid, start, end = head.split()
        gts.append((float(start), float(end)))
        durations.append(length[vid])
    assert len(gts) == 3720
    assert grounding_metrics(gts, gts)["mIoU"] == 1.0
    clipped = grounding_metrics(gts, gts, durations=durations, thresholds=(0.999999,))
    past_end = sum(e > d for (_, e), d in zip(gts, durations))
    assert past_end == 562
    assert clipped["R1@0.999999"] == pytest.approx((3720 - 562) / 3720)


# ---------------------------------------------------------------- Video-MME official template


def test_videomme_template_strict_vs_official(ann: Path) -> None:
    records = load_videomme_results(ann / "videomme" / "output_test_template.json")
    assert len(records) == 9 and {r.duration for r in records} == {"short"}
    rep = multiple_choice_report(records, "videomme")
    assert rep["strict"]["correct"] == 7 and rep["strict"]["denominator"] == 9
    assert rep["official"]["correct"] == 6 and rep["official"]["denominator"] == 9
    assert rep["other"]["lmms_eval_videomme"]["correct"] == 6
    item = {i["id"]: i for i in rep["official"]["items"]}["002-1"]  # "Answer: C. Jade."
    assert item["parsed"] == "A" and not item["correct"]
    assert {i["id"]: i for i in rep["strict"]["items"]}["002-1"]["parsed"] == "C"
    assert rep["official"]["per_task"]["Counting Problem"]["accuracy"] == pytest.approx(75.0)
    assert any("expects 900" in n for n in rep["notes"])


def test_videomme_loader_errors(tmp_path: Path) -> None:
    bad = tmp_path / "res.json"
    bad.write_text(
        '[{"video_id": "001", "duration": "short", "domain": "K", "questions": [{"question_id": "1"}]}]'
    )
    with pytest.raises(AnnotationError, match="missing key 'task_type'"):
        load_videomme_results(bad)
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match="cannot read"):
        load_videomme_results(bad)


# ---------------------------------------------------------------- EgoSchema public subset


def test_egoschema_subset_answers(ann: Path) -> None:
    path = ann / "egoschema" / "subset_answers.json"
    answers = load_egoschema_answers(path)
    assert len(answers) == 500 and set(answers.values()) <= set(range(5))
    perfect = egoschema_subset_report({q: f"The answer is {LETTERS[i]}." for q, i in answers.items()}, path)
    assert perfect["strict"]["accuracy"] == 100.0 and perfect["official"]["accuracy"] == 100.0
    # the lmms-eval exact-match rule rejects the chatty answers entirely
    assert perfect["other"]["egoschema_lmms_eval"]["accuracy"] == 0.0
    always_a = egoschema_subset_report(dict.fromkeys(answers, "A"), path)
    share_a = 100.0 * sum(i == 0 for i in answers.values()) / 500
    assert always_a["official"]["accuracy"] == pytest.approx(share_a)
    half = dict(list({q: LETTERS[i] for q, i in answers.items()}.items())[:250])
    rep = egoschema_subset_report(half, answers)
    assert rep["official"]["accuracy"] == 50.0 and rep["missing"] == 250


def test_egoschema_answers_validation(tmp_path: Path) -> None:
    bad = tmp_path / "answers.json"
    bad.write_text(json.dumps({"q": 7}))
    with pytest.raises(AnnotationError, match="integer 0-4"):
        load_egoschema_answers(bad)
