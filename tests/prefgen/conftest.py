"""Fixtures for the prefgen tests: short test videos with hard cuts (frames carry their own index)."""

from __future__ import annotations

from pathlib import Path

import pytest

# (W, H) = (32, 96): the frame-index code covers a small part of the frame, so counting frames does not
# look like a shot change to pixel features, while the background colour change at a cut does.
SIZE = (32, 96)
FPS = 8


def cut_video(path: Path, duration: float, cuts: tuple[float, ...], audio: bool = False) -> Path:
    from vidtempo.data.testing import make_test_video

    return make_test_video(path, duration=duration, fps=FPS, size=SIZE, cuts=cuts, audio=audio)


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """good: 5 shots of 2 s; few: 2 shots; long: a 17.5 s last shot; many: 9 shots; repetitive: 24 shots of
    1 s whose colours cycle through 6 (each colour 4 times)."""
    root = tmp_path_factory.mktemp("prefgen_videos")
    return {
        "good": cut_video(root / "good.mp4", 10, (2, 4, 6, 8), audio=True),
        "few": cut_video(root / "few.mp4", 6, (3,)),
        "long": cut_video(root / "long.mp4", 22, (1.5, 3, 4.5)),
        "many": cut_video(root / "many.mp4", 10, tuple(round(1.1 * k, 1) for k in range(1, 9))),
        "repetitive": cut_video(root / "repetitive.mp4", 24, tuple(float(k) for k in range(1, 24))),
    }
