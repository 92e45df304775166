"""The decoded-clip store: a clip read back is bit-identical to a fresh decode; a second collator (another
process) reads it instead of decoding; a changed video is decoded again; a broken entry names its file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import vidtempo.data.video as video_mod
from vidtempo.data.collate import VideoCollator
from vidtempo.data.samples import ConversationSample
from vidtempo.data.testing import make_test_video

TURNS = [{"role": "user", "content": "<video>\nWhen is the beep?"}, {"role": "assistant", "content": "1 - 2 seconds"}]


def collator(tokenizer, store: Path | None) -> VideoCollator:
    return VideoCollator(tokenizer, num_frames=6, frame_size=32, audio=True, audio_mel=20,
                         clip_store=str(store) if store else None)  # fmt: skip


def test_a_stored_clip_is_what_a_fresh_decode_gives_and_is_not_decoded_again(tokenizer, tmp_path, monkeypatch):
    video = make_test_video(tmp_path / "a.mp4", duration=3.0, beeps=((1.0, 880.0),))
    samples = [ConversationSample(str(video), [dict(t) for t in TURNS], id=str(i)) for i in range(2)]
    fresh = collator(tokenizer, None)(samples)
    first = collator(tokenizer, tmp_path / "store")(samples)  # decodes and writes the entry
    assert len(list((tmp_path / "store").rglob("*.safetensors"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the store has the clip")

    monkeypatch.setattr(video_mod, "load_clip", no_decoding)
    second = collator(tokenizer, tmp_path / "store")(samples)  # another process: reads the entry
    for batch in (first, second):
        assert torch.equal(batch.frames, fresh.frames) and torch.equal(batch.audio, fresh.audio)
        assert torch.equal(batch.timestamps, fresh.timestamps)
        assert torch.equal(batch.audio_lengths, fresh.audio_lengths)
        assert all(torch.equal(batch.targets[k], fresh.targets[k]) for k in fresh.targets)


def test_a_changed_video_is_decoded_again(tokenizer, tmp_path):
    video = make_test_video(tmp_path / "a.mp4", duration=2.0)
    sample = ConversationSample(str(video), [dict(t) for t in TURNS], id="0")
    collator(tokenizer, tmp_path / "store")([sample])
    make_test_video(video, duration=3.0)  # same path, new content
    os.utime(video, ns=(1, 10**18))
    batch = collator(tokenizer, tmp_path / "store")([sample])
    assert len(list((tmp_path / "store").rglob("*.safetensors"))) == 2
    assert float(batch.timestamps[0].max()) > 2.0  # the new 3-s video's frames, not the stored 2-s clip


def test_a_broken_entry_names_its_file(tokenizer, tmp_path):
    video = make_test_video(tmp_path / "a.mp4", duration=2.0)
    sample = ConversationSample(str(video), [dict(t) for t in TURNS], id="0")
    collator(tokenizer, tmp_path / "store")([sample])
    entry = next((tmp_path / "store").rglob("*.safetensors"))
    entry.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=entry.name):
        collator(tokenizer, tmp_path / "store")([sample])
