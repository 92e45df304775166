"""Shared fixtures: synthetic videos (made once per session) and the real annotation folder."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from vidtempo.data.testing import make_audio_only, make_corrupt_video, make_test_video

# Main test video: 6 s at 8 fps (48 frames), keyframe every 8 frames, beeps at known times, one cut.
FPS = 8
DURATION = 6.0
BEEPS = ((1.0, 880.0), (2.5, 440.0), (4.2, 1000.0))
CUTS = (3.0,)
GOP = 8


@pytest.fixture(scope="session")
def spec() -> SimpleNamespace:
    """Facts of the ``main`` test video (what the tests check decoded output against)."""
    return SimpleNamespace(fps=FPS, duration=DURATION, beeps=BEEPS, cuts=CUTS, gop=GOP)


def backend_or_skip(name: str) -> str:
    """Skip the test when ``name``'s package or native library cannot be loaded (reason in the skip).

    With ``VIDTEMPO_REQUIRE_TORCHCODEC=1`` (set by ``.ci/run``) an unusable torchcodec fails the test instead:
    CI installs it and its FFmpeg libraries (``make system-deps``), so a skip there would hide a broken set-up.
    """
    if name == "decord":
        pytest.importorskip("decord", reason="decord not installed")
    if name == "torchcodec":
        from vidtempo.data.video import _import_torchcodec

        try:
            _import_torchcodec()
        except ImportError as err:
            if os.environ.get("VIDTEMPO_REQUIRE_TORCHCODEC") == "1":
                pytest.fail(f"VIDTEMPO_REQUIRE_TORCHCODEC=1 but torchcodec is unusable: {err}; run `make "
                            "system-deps` (as root) and `make install`")  # fmt: skip
            pytest.skip(f"torchcodec unusable here: {err}")
    return name


@pytest.fixture(params=["pyav", "decord", "torchcodec"])
def backend(request: pytest.FixtureRequest) -> str:
    return backend_or_skip(request.param)


@pytest.fixture
def torchcodec_backend() -> str:
    """``"torchcodec"``, or a skip (a failure under ``VIDTEMPO_REQUIRE_TORCHCODEC=1``) when it is unusable."""
    return backend_or_skip("torchcodec")


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "main": make_test_video(root / "main.mp4", duration=DURATION, fps=FPS, beeps=BEEPS, cuts=CUTS, gop=GOP),
        "silent": make_test_video(root / "silent.mp4", duration=2.0, fps=FPS, audio=False),
        "dense": make_test_video(root / "dense.mp4", duration=8.0, fps=25, size=(64, 48), audio=False, gop=25),
        "mkv": make_test_video(root / "hevc.mkv", duration=3.0, fps=10, codec="hevc", audio=False),
        "truncated": make_corrupt_video(root / "truncated.mp4"),
        "truncated_stream": make_corrupt_video(root / "cut.mkv", kind="truncated_stream"),
        "garbage": make_corrupt_video(root / "garbage.mp4", kind="garbage"),
        "audio_only": make_audio_only(root / "audio_only.m4a"),
        "empty": _touch(root / "empty.mp4"),
        "missing": root / "does_not_exist.mp4",
    }


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="session")
def annotations() -> Path:
    """The real annotation files: $VIDTEMPO_SHARED/data/annotations, else ../shared next to the repo."""
    shared = Path(os.environ.get("VIDTEMPO_SHARED") or Path(__file__).resolve().parents[2].parent / "shared")
    root = shared / "data" / "annotations"
    if not root.is_dir():
        pytest.skip(f"real annotation files not found at {root} (set VIDTEMPO_SHARED)")
    return root
