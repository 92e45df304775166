"""The targets of a TempoSynth report: reading each measure, inclusive bounds, missing measures, bad targets."""

from __future__ import annotations

import pytest

from vidtempo.eval.targets import DEMO_TARGETS, Target, check_targets, shortened_run_note


def report(**values: float) -> dict:
    """A report with grounding mIoU (normal/blind) and order accuracy (normal/time) as given."""
    metrics: dict = {c: {"grounding": {"strict": {}}, "mcq": {"strict": {"per_task": {}}}}
                     for c in ("normal", "time", "blind")}  # fmt: skip
    for key, value in values.items():
        condition, measure = key.split("__")
        if measure in ("mIoU", "R1"):
            metrics[condition]["grounding"]["strict"]["mIoU" if measure == "mIoU" else "R1@0.5"] = value
        else:
            metrics[condition]["mcq"]["strict"]["per_task"][measure] = {"accuracy": value}
    return {"metrics": metrics}


def test_bounds_are_inclusive_and_read_from_their_condition():
    checks = check_targets(report(normal__mIoU=50.0, blind__mIoU=25.0, normal__R1=49.9, normal__order=85.0,
                                  time__order=40.1, normal__audio_visual=80.0))  # fmt: skip
    met = {c.target.label: c.met for c in checks}
    assert met == {"grounding mIoU": True, "grounding mIoU, blind": True, "grounding R1@0.5": False,
                   "ordering": True, "ordering, time control": False, "audio-visual": True}  # fmt: skip
    assert [c.value for c in checks] == [50.0, 25.0, 49.9, 85.0, 40.1, 80.0]


def test_a_measure_the_report_lacks_is_not_met():
    checks = check_targets(report(normal__mIoU=70.0), DEMO_TARGETS[:1] + DEMO_TARGETS[3:4])
    assert [(c.value, c.met) for c in checks] == [(70.0, True), (None, False)]
    assert check_targets({}, DEMO_TARGETS[:1])[0].value is None


def test_bad_targets_are_refused_when_written():
    with pytest.raises(ValueError, match="op must be one of"):
        Target("x", "normal", ("grounding", "mIoU"), ">", 1.0)
    with pytest.raises(ValueError, match="path must be"):
        Target("x", "normal", ("mcq", "strict", "order"), ">=", 1.0)


def test_shortened_run_note():
    assert shortened_run_note(2000, 2000) is None and shortened_run_note(2001, 2000) is None
    assert shortened_run_note(1287, 2000) == "stopped at step 1287 of 2000: results below are not the demo's"
