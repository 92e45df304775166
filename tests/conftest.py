"""Shared fixtures. Tests are offline by construction: tiny models built from real architectures' configs,
a tokenizer trained locally, videos encoded by PyAV on the fly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _data_home(tmp_path_factory):
    """Recipes generate their synthetic data under $VIDTEMPO_DATA: keep it out of the repo during tests."""
    if "VIDTEMPO_DATA" not in os.environ:
        os.environ["VIDTEMPO_DATA"] = str(tmp_path_factory.mktemp("vidtempo_data"))
    yield


def shared_dir() -> Path:
    """The workplace's shared/ folder (real annotation files), sibling of the repo root."""
    return Path(os.environ.get("VIDTEMPO_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def tokenizer():
    from vidtempo.models.tokenizers import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Four short real mp4 files (H.264 + AAC) and a conversation JSONL about them."""
    from vidtempo.data.testing import make_test_video

    root = tmp_path_factory.mktemp("videos")
    records = []
    for i in range(4):
        make_test_video(root / f"v{i}.mp4", duration=2.0 + i, fps=8, size=(32, 32), beeps=((0.5 + i * 0.3, 880.0),))
        records.append({
            "id": f"v{i}",
            "video": f"v{i}.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhen is the beep?"},
                {"from": "gpt", "value": f"{0.5 + i * 0.3:.1f} - {0.6 + i * 0.3:.1f} seconds"},
            ],
        })
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return root
