"""The synthetic-media helpers: frame codes survive H.264, outputs are deterministic and fast."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from vidtempo.data.testing import (
    draw_frame,
    make_corrupt_video,
    make_test_video,
    read_frame_index,
    scene_of,
)


@pytest.mark.parametrize("index", [0, 1, 2, 255, 256, 4097, 65535])
def test_code_round_trips_on_raw_pixels(index: int) -> None:
    assert read_frame_index(draw_frame(index, (64, 48))) == index


def test_code_rejects_out_of_range_index() -> None:
    with pytest.raises(ValueError, match="16 bits"):
        draw_frame(2**16, (64, 48))


def test_every_encoded_frame_reads_back_its_index(tmp_path) -> None:
    path = make_test_video(tmp_path / "v.mp4", duration=4.0, fps=8, cuts=(2.0,))
    with av.open(str(path)) as container:
        decoded = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert [read_frame_index(img) for _, img in decoded] == list(range(32))
    # background colour (bottom-left pixel) changes exactly at the cut, frame 16 = 2.0 s
    colours = [tuple(img[-4, 4].astype(int) // 32) for _, img in decoded]
    assert len(set(colours[:16])) == 1 and len(set(colours[16:])) == 1 and colours[15] != colours[16]
    assert scene_of(1.99, (2.0,)) == 0 and scene_of(2.0, (2.0,)) == 1


def test_video_is_deterministic_and_fast(tmp_path) -> None:
    t0 = time.perf_counter()
    a = make_test_video(tmp_path / "a.mp4").read_bytes()
    elapsed = time.perf_counter() - t0
    b = make_test_video(tmp_path / "b.mp4").read_bytes()
    assert a == b
    assert elapsed < 1.0, f"4 s 64x48 video took {elapsed:.2f} s to write"


def test_audio_track_presence(tmp_path) -> None:
    with av.open(str(make_test_video(tmp_path / "a.mp4", audio=True))) as c:
        assert len(c.streams.audio) == 1 and c.streams.audio[0].codec_context.name == "aac"
    with av.open(str(make_test_video(tmp_path / "n.mp4", audio=False))) as c:
        assert len(c.streams.audio) == 0


def test_bad_arguments_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="size"):
        make_test_video(tmp_path / "x.mp4", size=(30, 48))
    with pytest.raises(ValueError, match="outside"):
        make_test_video(tmp_path / "x.mp4", duration=1.0, beeps=((1.5, 440.0),))
    with pytest.raises(ValueError, match="kind"):
        make_corrupt_video(tmp_path / "x.mp4", kind="nope")


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_corrupt_files_do_not_open(tmp_path, kind: str) -> None:
    path = make_corrupt_video(tmp_path / f"{kind}.mp4", kind=kind)
    assert path.stat().st_size > 0
    with pytest.raises(av.error.FFmpegError):
        av.open(str(path)).close()
    again = make_corrupt_video(tmp_path / f"{kind}2.mp4", kind=kind)
    assert np.array_equal(np.fromfile(path, np.uint8), np.fromfile(again, np.uint8))  # deterministic
