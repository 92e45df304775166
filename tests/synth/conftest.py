"""Shared fixtures: one small TempoSynth set per test session (about 1-2 s to generate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidtempo.synth.generate import Manifest, generate

SMALL = {"num_videos": 12, "seed": 7, "size": 64, "fps": 8, "min_duration": 6, "max_duration": 14}


@pytest.fixture(scope="session")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """12 videos of 6-14 s at 64x64, 8 fps (split 10/1/1)."""
    out: Path = tmp_path_factory.mktemp("temposynth")
    return generate(out, progress=False, **SMALL)
