"""Fixtures of the eval tests: helpers that make a small TempoSynth test split and a tiny checkpoint saved through
the real path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch


def _synth_test_split(root: Path, num_videos: int, seed: int = 0) -> Path:
    """``num_videos`` TempoSynth videos of 6-8 s at 32 px in ``root``, all in the test split."""
    from vidtempo.synth.generate import generate

    generate(root, num_videos=num_videos, seed=seed, size=32, min_duration=6, max_duration=8,
             splits=(0.0, 0.0, 1.0), progress=False)  # fmt: skip
    return root


def _saved_checkpoint(node: dict[str, Any], out: Path, tokenizer: Any) -> Path:
    """The model of ``node`` (seed 0) saved with ``tokenizer`` into ``out`` by ``save_pretrained``."""
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    torch.manual_seed(0)
    save_pretrained(build_video_llm(node), out, model_config=node, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="session")
def synth_test_split():
    """``synth_test_split(root, num_videos, seed=0)``: a TempoSynth folder whose videos are all test videos."""
    return _synth_test_split


@pytest.fixture(scope="session")
def saved_checkpoint():
    """``saved_checkpoint(node, out, tokenizer)``: a checkpoint directory of the model of ``node``."""
    return _saved_checkpoint
