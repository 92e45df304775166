"""Frame samplers: segment midpoints, rate caps, effective fps, spans."""

from __future__ import annotations

import numpy as np
import pytest

from vidtempo.data.sampling import FpsSampler, UniformSampler, resolve_span


def test_uniform_midpoints_and_indices() -> None:
    plan = UniformSampler(4)(duration=8.0, native_fps=10.0)
    np.testing.assert_allclose(plan.times, [1.0, 3.0, 5.0, 7.0])
    assert plan.indices.tolist() == [10, 30, 50, 70] and plan.fps == pytest.approx(0.5)


def test_uniform_inside_span_stays_inside() -> None:
    plan = UniformSampler(3)(duration=10.0, native_fps=4.0, start=2.0, end=5.0)
    assert plan.times.min() > 2.0 and plan.times.max() < 5.0
    assert plan.indices.min() >= 8 and plan.indices.max() <= 19  # frames shown in [2, 5)
    assert plan.fps == pytest.approx(1.0)


def test_uniform_repeats_when_span_is_short() -> None:
    plan = UniformSampler(10)(duration=1.0, native_fps=4.0)
    assert len(plan.indices) == 10 and set(plan.indices.tolist()) == {0, 1, 2, 3}
    assert np.all(np.diff(plan.indices) >= 0)


@pytest.mark.parametrize(
    ("fps", "max_frames", "duration", "count", "effective"),
    [
        (1.0, None, 10.0, 10, 1.0),
        (2.0, 8, 10.0, 8, 0.8),  # capped: the rate reported is what was obtained
        (100.0, None, 2.0, 50, 25.0),  # never more than the native frames
        (0.1, None, 3.0, 1, 1 / 3),  # at least one frame
    ],
)
def test_fps_sampler_caps(fps, max_frames, duration, count, effective) -> None:
    plan = FpsSampler(fps, max_frames)(duration=duration, native_fps=25.0)
    assert len(plan.times) == count and plan.fps == pytest.approx(effective)
    assert len(set(plan.indices.tolist())) == count  # no duplicates at a fixed rate


def test_native_rate_hits_every_frame_once() -> None:
    plan = FpsSampler(8.0)(duration=4.0, native_fps=8.0, num_video_frames=32)
    assert plan.indices.tolist() == list(range(32))


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [(2.0, 2.0, "must be < end"), (3.0, 1.0, "must be < end"), (-0.5, None, "negative"), (12.0, None, "after")],
)
def test_bad_spans(start, end, match) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_span(10.0, start, end)


def test_end_clamped_to_duration() -> None:
    assert resolve_span(10.0, 8.0, 30.0) == (8.0, 10.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        UniformSampler(0)
    with pytest.raises(ValueError):
        FpsSampler(0.0)
    with pytest.raises(ValueError):
        FpsSampler(1.0, max_frames=0)
    with pytest.raises(ValueError, match="native fps"):
        UniformSampler(2)(duration=1.0, native_fps=0.0)


def test_samplers_are_not_a_registry_kind() -> None:
    """``load_clip`` picks the sampler from num_frames / fps: there is no ``sampler`` alias table."""
    from vidtempo.registry import kinds

    assert "sampler" not in kinds()
