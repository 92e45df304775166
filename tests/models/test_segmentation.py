"""Scene segmentation: synthetic features with known cuts, the top-k rule, padding, and real mp4 files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidtempo.models.segmentation import (
    SceneSegmenter,
    Segmentation,
    consecutive_similarity,
    frame_features_from_pixels,
)


def _scene_feats(cuts: list[int], frames: int, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """(T, P=4, D=8) features: one random base per scene plus small per-frame noise."""
    gen = torch.Generator().manual_seed(seed)
    bounds = [0, *cuts, frames]
    parts = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        base = torch.randn(1, 4, 8, generator=gen)
        parts.append(base + noise * torch.randn(e - s, 4, 8, generator=gen))
    return torch.cat(parts)  # (T, 4, 8)


def _check_chunks(seg: Segmentation, chunk_size: int) -> None:
    """Chunks tile [0, T) in order, are <= chunk_size long and never cross a scene start."""
    assert seg.chunks[0][0] == 0 and seg.chunks[-1][1] == seg.num_frames
    for (_, e0), (s1, _) in zip(seg.chunks[:-1], seg.chunks[1:]):
        assert e0 == s1
    starts = set(seg.scene_starts)
    for s, e in seg.chunks:
        assert 1 <= e - s <= chunk_size
        assert not any(s < c < e for c in starts)  # a scene start is always a chunk start
    assert starts <= {s for s, _ in seg.chunks}


def test_topk_finds_known_cuts_and_chunks() -> None:
    feats = _scene_feats([7, 19, 30], frames=40)
    seg = SceneSegmenter(max_segments=3, chunk_size=8).segment(feats)
    assert seg.scene_starts == [0, 7, 19, 30]
    assert seg.cuts == [7, 19, 30]
    assert seg.scenes == [(0, 7), (7, 19), (19, 30), (30, 40)]
    assert seg.chunks == [(0, 7), (7, 15), (15, 19), (19, 27), (27, 30), (30, 38), (38, 40)]
    assert seg.cut_times is None and seg.chunk_times is None
    assert seg.similarities.shape == (39,)
    _check_chunks(seg, 8)


def test_topk_code_rule_short_videos_are_frame_per_segment() -> None:
    seg = SceneSegmenter(max_segments=24).segment(_scene_feats([10], frames=25))
    assert seg.scene_starts == list(range(25))  # T <= 25: every frame is its own scene
    assert seg.chunks == [(i, i + 1) for i in range(25)]
    seg = SceneSegmenter(max_segments=24).segment(_scene_feats([10], frames=26))
    assert len(seg.scene_starts) == 25 and 10 in seg.scene_starts  # T = 26: 24 cuts, the real one included


def test_topk_takes_the_lowest_similarities() -> None:
    feats = torch.randn(50, 3, 5, generator=torch.Generator().manual_seed(3))
    seg = SceneSegmenter(max_segments=6, chunk_size=4).segment(feats)
    direct = F.cosine_similarity(feats[:-1].flatten(1), feats[1:].flatten(1), dim=-1)  # (49,)
    expected = sorted((torch.argsort(direct)[:6] + 1).tolist())
    assert seg.cuts == expected
    torch.testing.assert_close(seg.similarities, direct)
    _check_chunks(seg, 4)


def test_threshold_mode_cuts_below_threshold_and_caps() -> None:
    sims_feats = _scene_feats([5, 12, 22], frames=30)
    seg = SceneSegmenter(mode="threshold", threshold=0.5, max_segments=None).segment(sims_feats)
    assert seg.cuts == [5, 12, 22]
    assert all(s >= 0.5 for i, s in enumerate(seg.similarities.tolist()) if i + 1 not in seg.cuts)
    capped = SceneSegmenter(mode="threshold", threshold=0.5, max_segments=2).segment(sims_feats)
    low2 = sorted((torch.argsort(seg.similarities)[:2] + 1).tolist())
    assert capped.cuts == low2
    # Short videos are not forced to one frame per scene in threshold mode.
    short = SceneSegmenter(mode="threshold", threshold=0.5).segment(_scene_feats([4], frames=10))
    assert short.cuts == [4]


def test_batched_with_padding_equals_single_videos() -> None:
    a, b = _scene_feats([9, 20], frames=32, seed=1), _scene_feats([6], frames=18, seed=2)
    pad = torch.randn(14, 4, 8) * 10  # garbage frames: would create very low similarities if not masked
    feats = torch.stack([a, torch.cat([b, pad])])  # (2, 32, 4, 8)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[0], mask[1, :18] = True, True
    ts = torch.arange(32).float()[None].repeat(2, 1) / 2  # 2 fps
    segmenter = SceneSegmenter(max_segments=2, chunk_size=5)
    batch = segmenter.segment(feats, timestamps=ts, frame_mask=mask)
    singles = [segmenter.segment(a, timestamps=ts[0]), segmenter.segment(b, timestamps=ts[1, :18])]
    for got, want in zip(batch, singles):
        assert got.scene_starts == want.scene_starts and got.chunks == want.chunks
        assert got.cut_times == want.cut_times
        torch.testing.assert_close(got.similarities, want.similarities)
    assert batch[0].cut_times == [4.5, 10.0]
    assert batch[1].num_frames == 18 and batch[1].similarities.shape == (17,)
    assert batch[1].chunk_times[0] == (0.0, 2.0)  # frames 0..4 at 2 fps
    assert 6 in batch[1].scene_starts and all(s < 18 for s in batch[1].scene_starts)


def test_block_similarity_matches_direct() -> None:
    flat = torch.randn(2, 11, 7, generator=torch.Generator().manual_seed(4))
    direct = F.cosine_similarity(flat[:, :-1], flat[:, 1:], dim=-1)
    torch.testing.assert_close(consecutive_similarity(flat, block=3), direct)
    assert consecutive_similarity(flat[:, :1]).shape == (2, 0)
    seg = SceneSegmenter().segment(torch.randn(1, 4, 8))
    assert seg.scene_starts == [0] and seg.chunks == [(0, 1)] and seg.cuts == []


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="unknown mode 'kmeans'.*topk, threshold"):
        SceneSegmenter(mode="kmeans")
    with pytest.raises(ValueError, match="needs an integer max_segments"):
        SceneSegmenter(max_segments=None)
    with pytest.raises(ValueError, match=r"\(T, P, D\) or \(B, T, P, D\)"):
        SceneSegmenter().segment(torch.randn(5, 8))
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="right-padded"):
        SceneSegmenter().segment(torch.randn(1, 3, 2, 2), frame_mask=mask)
    with pytest.raises(ValueError, match="timestamps must have shape"):
        SceneSegmenter().segment(torch.randn(1, 3, 2, 2), timestamps=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="uint8"):
        frame_features_from_pixels(torch.zeros(2, 8, 8, 3))


def test_frame_features_from_pixels() -> None:
    frames = np.full((3, 48, 64, 3), 128, dtype=np.uint8)
    frames[1, :, :32] = 0  # left half black
    feats = frame_features_from_pixels(frames, size=4)  # (3, 16, 3)
    assert feats.shape == (3, 16, 3) and feats.dtype == torch.float32
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(feats[0], ((128 / 255 - mean) / std).expand(16, 3))
    grid = feats[1].view(4, 4, 3)
    torch.testing.assert_close(grid[:, :2], ((0 - mean) / std).expand(4, 2, 3))


# ----------------------------------------------------------------------------------------------------------
# Real videos: encoded with PyAV (H.264), decoded with PyAV.
# ----------------------------------------------------------------------------------------------------------

_FPS, _SIZE, _FRAMES = 8, (64, 48), 80  # 10 s
_HARD_CUTS = [16, 32, 64]  # first frame of each new scene
_FADE = (40, 56)  # cross-fade from scene 3's colour to scene 4's over these frames


def _palette() -> np.ndarray:
    """Five well-separated background colours with seeded jitter."""
    base = np.array(
        [[200, 40, 40], [40, 160, 60], [50, 70, 200], [220, 200, 60], [150, 50, 170]], dtype=float
    )
    return np.clip(base + np.random.default_rng(7).integers(-15, 16, base.shape), 0, 255)


def _background(i: int, colours: np.ndarray) -> np.ndarray:
    if i < _FADE[0]:
        return colours[int(np.searchsorted(_HARD_CUTS, i, side="right"))]
    if i < _FADE[1]:
        alpha = (i - _FADE[0] + 1) / (_FADE[1] - _FADE[0] + 1)
        return (1 - alpha) * colours[2] + alpha * colours[3]
    return colours[3] if i < _HARD_CUTS[2] else colours[4]


def _draw(i: int, colours: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: flat background and a contrasting square bouncing smoothly left and right."""
    width, height = _SIZE
    bg = _background(i, colours)
    img = np.empty((height, width, 3), dtype=float)
    img[:] = bg
    x = 2 * i % (2 * (width - 12))
    x = x if x < width - 12 else 2 * (width - 12) - x  # triangle wave: no jumps
    y = 14 + int(round(4 * np.sin(i / 4)))
    img[y : y + 10, x : x + 12] = 255 - bg
    return img.astype(np.uint8)


def _write_video(path: Path) -> None:
    av = pytest.importorskip("av")
    colours = _palette()
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("h264", rate=_FPS)
        stream.width, stream.height, stream.pix_fmt = *_SIZE, "yuv420p"
        stream.codec_context.options = {"crf": "20", "preset": "ultrafast", "threads": "1"}
        for i in range(_FRAMES):
            frame = av.VideoFrame.from_ndarray(_draw(i, colours), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _decode(path: Path) -> tuple[np.ndarray, torch.Tensor]:
    av = pytest.importorskip("av")
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    return np.stack(frames), torch.tensor(times)  # (T, H, W, 3), (T,)


def boundary_f1(pred: list[int], true: list[int], tol: int = 1) -> float:
    """F1 of predicted vs true cut frames, one-to-one matches within ``tol`` frames."""
    unmatched = list(true)
    hits = 0
    for p in pred:
        match = next((t for t in unmatched if abs(t - p) <= tol), None)
        if match is not None:
            unmatched.remove(match)
            hits += 1
    if not pred or not true:
        return float(pred == true)
    precision, recall = hits / len(pred), hits / len(true)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def test_boundary_f1_helper() -> None:
    assert boundary_f1([16, 33, 64], _HARD_CUTS) == 1.0
    assert boundary_f1([16, 35], _HARD_CUTS) == pytest.approx(0.4)
    assert boundary_f1([], _HARD_CUTS) == 0.0


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    path = tmp_path_factory.mktemp("seg") / "cuts.mp4"
    _write_video(path)
    frames, times = _decode(path)
    assert frames.shape == (_FRAMES, _SIZE[1], _SIZE[0], 3)
    return frame_features_from_pixels(frames), times


def test_real_video_topk_finds_hard_cuts(cut_video) -> None:  # noqa: ANN001
    feats, times = cut_video
    seg = SceneSegmenter(max_segments=len(_HARD_CUTS)).segment(feats, timestamps=times)
    assert boundary_f1(seg.cuts, _HARD_CUTS) >= 0.9
    assert seg.cut_times == pytest.approx([c / _FPS for c in seg.cuts], abs=1e-6)
    _check_chunks(seg, 8)


def test_real_video_threshold_finds_cuts_and_ignores_the_fade(cut_video) -> None:  # noqa: ANN001
    feats, times = cut_video
    # 0.9 is TDC's threshold for DINOv2 features; downsampled pixels of a moving object need a lower one.
    seg = SceneSegmenter(mode="threshold", threshold=0.5).segment(feats, timestamps=times)
    assert boundary_f1(seg.cuts, _HARD_CUTS) >= 0.9
    assert not [c for c in seg.cuts if _FADE[0] - 1 <= c <= _FADE[1] + 1], (
        seg.cuts
    )  # the gradual change is kept
    fade_sims = seg.similarities[_FADE[0] - 1 : _FADE[1]]
    assert fade_sims.min() > seg.similarities[[c - 1 for c in _HARD_CUTS]].max() + 0.3


def test_real_video_from_shared_test_media(tmp_path: Path) -> None:
    testing = pytest.importorskip("vidtempo.data.testing", reason="vidtempo.data.testing not available")
    cuts_s = (1.0, 2.5, 4.0)
    path = testing.make_test_video(tmp_path / "t.mp4", duration=6.0, fps=8, cuts=cuts_s, audio=False)
    frames, times = _decode(path)
    seg = SceneSegmenter(max_segments=len(cuts_s)).segment(
        frame_features_from_pixels(frames), timestamps=times
    )
    assert boundary_f1(seg.cuts, [round(c * 8) for c in cuts_s]) >= 0.9
