"""Video selection: shots from pixel features, clip filters, similarity grouping, repetition filter."""

from __future__ import annotations

import numpy as np
import pytest

from vidtempo.prefgen.select import (
    SelectSettings,
    check_repetition,
    filter_clips,
    merge_groups,
    merged_segments,
    select_frames,
    select_video,
)


def test_good_video_kept_with_its_cuts(videos):
    sel = select_video(videos["good"], SelectSettings())
    assert sel.keep and sel.reason is None
    assert sel.clips == [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80)]  # cuts at 2, 4, 6, 8 s (8 fps)
    assert len(sel.segments) == 5 and sel.segment_times()[1] == (2.0, 4.0)
    assert sel.to_record()["segment_times"][-1] == [8.0, 10.0]


@pytest.mark.parametrize(
    ("name", "overrides", "reason"),
    [
        ("few", {}, "too few clips: 2 < 4"),
        ("many", {"max_clips": 6}, "too many clips: 9 > 6"),
        ("long", {}, "clip too long: clip 3 lasts 17.50 s > 16 s"),
        ("repetitive", {}, "repetitive: group"),
    ],
)
def test_rejections_record_the_reason(videos, name, overrides, reason):
    sel = select_video(videos[name], SelectSettings(**overrides))
    assert not sel.keep
    assert sel.reason.startswith(reason), sel.reason
    if name == "repetitive":  # 24 one-second shots, 6 colours: every colour group recurs 4 times
        assert len(sel.clips) == 24 and len(sel.groups) == 6 and all(len(g) == 4 for g in sel.groups)


def test_many_short_clips_pass_with_default_limits(videos):
    sel = select_video(videos["many"], SelectSettings())
    assert sel.keep and len(sel.clips) == 9
    assert len(sel.groups) == 6  # palette of 6 colours: shots 0/6, 1/7, 2/8 look alike and are grouped


def test_short_and_blank_shots_are_dropped():
    frames = np.zeros((40, 16, 16, 3), dtype=np.uint8)
    frames[:, :, 8:] = 200  # textured (half black, half bright) everywhere ...
    frames[20:30] = 90  # ... except a flat 10-frame shot
    kept, dropped = filter_clips(
        frames, [(0, 1), (1, 20), (20, 30), (30, 40)], fps=10.0, settings=SelectSettings()
    )
    assert kept == [(1, 20), (30, 40)]
    assert [i for i, _ in dropped] == [0, 2]
    assert dropped[0][1].startswith("short") and dropped[1][1].startswith("blank")


def test_merge_groups_average_linkage():
    sim = np.array([
        [1.0, 0.95, 0.85, 0.1],
        [0.95, 1.0, 0.70, 0.1],
        [0.85, 0.70, 1.0, 0.1],
        [0.1, 0.1, 0.1, 1.0],
    ])  # fmt: skip
    # 0 and 1 merge (0.95); the merged row to clip 2 is (0.85 + 0.70) / 2 = 0.775 <= 0.8: no more merges
    assert merge_groups(sim, 0.8) == [[0, 1], [2], [3]]
    assert merge_groups(sim, 0.7) == [[0, 1, 2], [3]]
    assert merge_groups(sim, 0.99) == [[0], [1], [2], [3]]


def test_repetition_filter_thresholds():
    settings = SelectSettings()
    alternating = merged_segments([[0, 2, 4, 6], [1, 3, 5, 7]], 8)  # A B A B ...: 8 segments, 4 of each
    assert check_repetition(alternating, settings).startswith("repetitive")
    varied = merged_segments([[0, 4], [1], [2], [3], [5]], 6)  # group 0 twice in 6 segments: 2 <= 6 // 3
    assert check_repetition(varied, settings) is None
    assert check_repetition(merged_segments([[0], [1], [2]], 3), settings).startswith("too few merged")
    merged = merged_segments([[0, 1], [2], [3], [4], [5]], 6)  # consecutive clips of a group: one segment
    assert merged[0] == (0, [0, 1]) and len(merged) == 5


def test_encoder_embedder_is_used_for_grouping(videos):
    """A constant embedder puts every clip in one group: one merged segment, rejected as too few."""
    calls = []

    def embed(frames):
        calls.append(frames.shape)
        return np.ones((len(frames), 4))

    sel = select_video(videos["good"], SelectSettings(), embed=embed)
    assert calls and calls[0][0] == 5 and calls[0][1:] == (96, 32, 3)  # native-size middle frames
    assert sel.groups == [[0, 1, 2, 3, 4]] and sel.reason.startswith("too few merged segments: 1")


def test_select_frames_on_arrays():
    frames = np.zeros((48, 16, 16, 3), dtype=np.uint8)
    for k, colour in enumerate([(200, 40, 40), (40, 160, 60), (50, 70, 200), (200, 180, 40)]):
        frames[12 * k : 12 * (k + 1)] = colour
        frames[12 * k : 12 * (k + 1), :4, :4] = 255  # not blank
    sel = select_frames(frames, 8.0, SelectSettings(), video_id="arr")
    assert sel.keep and sel.clips == [(0, 12), (12, 24), (24, 36), (36, 48)]
