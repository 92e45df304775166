"""Perturbations, pair filters, perturbed videos, the resumable writer, and the output as curriculum data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidtempo.prefgen.captions import CaptionSettings, join_captions
from vidtempo.prefgen.pairs import (
    PairSettings,
    PrefgenError,
    PrefgenSettings,
    build_pairs,
    pair_filter_reason,
    run_prefgen,
    video_units,
    write_perturbed_video,
)
from vidtempo.prefgen.select import Selection, SelectSettings, select_video


class JoinCaptioner:
    """Deterministic stand-in for the model: captions name the clip, descriptions join them in list order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def caption_clips(self, video, bounds):
        self.calls.append(str(video))
        return [f"Clip from {s:.1f} to {e:.1f} s" for s, e in bounds]

    def describe(self, caption_lists):
        return [join_captions(c) for c in caption_lists]


def fake_selection(n: int) -> Selection:
    clips = [(8 * i, 8 * (i + 1)) for i in range(n)]
    segments = [(i, [i]) for i in range(n)]
    return Selection(video="v.mp4", video_id="v", fps=8.0, num_frames=8 * n, duration=float(n), clips=clips,
                     groups=[[i] for i in range(n)], segments=segments, keep=True)  # fmt: skip


def _orders(records, domain="caption"):
    return {(r["perturbation"], r["magnitude"]): r["order"] for r in records if r["domain"] == domain}


def test_perturbations_at_each_magnitude(tmp_path):
    n = 16
    captions = [f"event {i}" for i in range(n)]
    res = build_pairs(
        fake_selection(n), captions, JoinCaptioner(), PairSettings(domains=["caption"]), tmp_path
    )
    orders = _orders(res.records)
    assert len(orders) == 12  # 3 perturbations x 4 magnitudes, none filtered
    for m in (16, 8, 4, 2):
        g = n // m  # units kept by drop / block size of shuffle and reverse
        drop = orders[("drop", m)]
        assert len(drop) == g and drop == sorted(drop) and len(set(drop)) == g
        blocks = [list(range(i, i + g)) for i in range(0, n, g)]
        assert orders[("reverse", m)] == [i for b in reversed(blocks) for i in b]
        shuffled = orders[("shuffle", m)]
        assert sorted(shuffled) == list(range(n)) and shuffled != list(range(n))
        chunks = [shuffled[i : i + g] for i in range(0, n, g)]
        assert all(c in blocks for c in chunks)  # whole blocks moved, order inside a block kept
    rec = next(r for r in res.records if r["perturbation"] == "reverse" and r["magnitude"] == 2)
    assert rec["chosen"].startswith("event 0.") and rec["rejected"].startswith("event 8.")
    assert rec["prompt"] in PairSettings().instructions and rec["id"] == "v_caption_reverse_m2"


def test_identity_shuffle_is_redrawn(tmp_path, monkeypatch):
    """With 2 blocks half the shuffles are the identity; the first draw is forced to be one."""
    from vidtempo.prefgen import pairs

    draws = []

    class FirstDrawIdentity:
        def __init__(self, rng):
            self.rng = rng

        def permutation(self, x):
            draws.append(x)
            return np.arange(x) if len(draws) == 1 else np.array([1, 0])

        def integers(self, *a):
            return self.rng.integers(*a)

    real = pairs.rng_for
    monkeypatch.setattr(pairs, "rng_for", lambda *keys: FirstDrawIdentity(real(*keys)))
    settings = PairSettings(perturbations=["shuffle"], magnitudes=[2], domains=["caption"])
    res = build_pairs(fake_selection(4), ["a", "b", "c", "d"], JoinCaptioner(), settings, tmp_path)
    assert draws == [2, 2] and _orders(res.records)[("shuffle", 2)] == [2, 3, 0, 1]


def test_pair_filters_as_released():
    assert pair_filter_reason("a b c", "a b c d", "shuffle") == "chosen is contained in rejected"
    assert pair_filter_reason("short", "much longer text", "drop").startswith("drop:")
    assert pair_filter_reason("x" * 10, "y" * 16, "reverse").startswith("reverse: length ratio")
    assert pair_filter_reason("x" * 10, "y" * 15, "reverse") is None
    assert pair_filter_reason("x" * 10, "y" * 9, "drop") is None


def test_filtered_pairs_are_counted(tmp_path):
    class Echo(JoinCaptioner):
        def describe(self, caption_lists):  # every answer identical: every pair is filtered
            return ["the same text"] * len(caption_lists)

    res = build_pairs(
        fake_selection(8), list("abcdefgh"), Echo(), PairSettings(domains=["caption"]), tmp_path
    )
    assert res.records == [] and sum(res.status["stats"].values()) == 12


def test_video_domain_writes_perturbed_video(videos, tmp_path):
    from vidtempo.data.testing import read_frame_index
    from vidtempo.data.video import load_clip

    sel = select_video(videos["good"], SelectSettings())
    assert video_units(sel) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 10.0)]
    settings = PairSettings(perturbations=["reverse"], magnitudes=[2], domains=["video"])
    res = build_pairs(sel, [f"c{i}" for i in range(5)], JoinCaptioner(), settings, tmp_path)
    (rec,) = res.records
    assert rec["order"] == [4, 2, 3, 0, 1] and rec["chosen"] == rec["rejected"]
    clip = load_clip(rec["rejected_video"])
    got = [read_frame_index(f) for f in clip.frames.numpy()]
    expected = [*range(64, 80), *range(32, 64), *range(0, 32)]
    assert got == expected and clip.native_fps == 8.0
    from vidtempo.data.audio import load_audio

    assert abs(len(load_audio(rec["rejected_video"])[0]) / 16000 - 10.0) < 0.1  # audio re-cut along
    # the identity order rebuilds the original frame sequence
    same = write_perturbed_video(videos["good"], tmp_path / "id.mp4", video_units(sel), range(5))
    assert [read_frame_index(f) for f in load_clip(same).frames.numpy()] == list(range(80))


def _settings(**pairs) -> PrefgenSettings:
    return PrefgenSettings(caption=CaptionSettings(aggregate="join"), pairs=PairSettings(**pairs))


def test_resume_skips_finished_videos_and_repairs_a_crash(videos, tmp_path):
    out = tmp_path / "pairs.jsonl"
    inputs = [videos["good"], videos["few"]]
    first = JoinCaptioner()
    counts = run_prefgen(inputs, out, _settings(domains=["caption"]), first, progress=False)
    assert counts["kept"] == 1 and counts["rejected"] == 1 and counts["pairs"] == 12
    assert first.calls == [str(videos["good"])]
    status = [json.loads(x) for x in (tmp_path / "pairs.status.jsonl").read_text().splitlines()]
    assert [s.get("status") for s in status[1:]] == ["kept", "rejected"]
    assert status[2]["reason"] == "too few clips: 2 < 4"

    second = JoinCaptioner()
    counts = run_prefgen(inputs, out, _settings(domains=["caption"]), second, progress=False)
    assert second.calls == [] and counts["skipped_finished"] == 2
    lines = out.read_text().splitlines()
    assert len(lines) == 12

    # a crash after writing pairs of a video but before its status line, in the middle of a line
    with open(out, "a") as f:
        f.write(json.dumps({"id": "orphan", "video_id": "many"}) + "\n" + '{"id": "half')
    third = JoinCaptioner()
    run_prefgen([*inputs, videos["many"]], out, _settings(domains=["caption"]), third, progress=False)
    assert third.calls == [str(videos["many"])]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["id"] != "orphan" for r in rows) and len(rows) == 24

    with pytest.raises(PrefgenError, match="other settings"):
        run_prefgen(inputs, out, _settings(domains=["caption"], seed=1), JoinCaptioner(), progress=False)


def test_output_loads_as_curriculum_data(videos, tmp_path):
    from vidtempo.data.datasets import PreferenceDataset
    from vidtempo.training.curriculum import MagnitudeFilter

    out = tmp_path / "pairs.jsonl"
    run_prefgen([videos["good"]], out, _settings(magnitudes=[4, 2]), JoinCaptioner(), progress=False)
    ds = PreferenceDataset(out)
    assert len(ds) == 12  # 3 perturbations x 2 magnitudes x 2 domains
    kinds = {(s.meta["domain"], s.rejected_video is not None) for s in ds.samples}
    assert kinds == {("caption", False), ("video", True)}
    for m in (4, 2):
        level = MagnitudeFilter(ds, [m])
        assert len(level) == 6 and {level[i].meta["magnitude"] for i in range(len(level))} == {m}
        assert {level[i].meta["perturbation"] for i in range(len(level))} == {"drop", "shuffle", "reverse"}
    assert MagnitudeFilter(ds, [16, 8, 4, 2]).counts == {2: 6, 4: 6}


def test_settings_from_recipe_section():
    from vidtempo.config.errors import RecipeError

    s = PrefgenSettings.from_section({"min_clips": 3, "group_threshold": 0.9, "domains": ["video"]}, "r.yaml")
    assert s.select.min_clips == 3 and s.select.group_threshold == 0.9 and s.pairs.domains == ["video"]
    assert PrefgenSettings.from_section(None).pairs.magnitudes == [16, 8, 4, 2]
    with pytest.raises(RecipeError, match="prefgen.min_clip"):
        PrefgenSettings.from_section({"min_clip": 3}, "r.yaml")
    with pytest.raises(RecipeError, match="unknown 'jitter'"):
        PrefgenSettings.from_section({"perturbations": ["jitter"]}, "r.yaml")
