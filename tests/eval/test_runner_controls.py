"""The time and blind controls of the synth benchmark, tested on the batch transforms directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtempo.data.collate import VideoCollator, VideoTextBatch
from vidtempo.data.samples import ConversationSample
from vidtempo.eval.controls import (
    ControlledCollator,
    apply_blind_control,
    apply_time_control,
    control_transform,
    time_permutation,
)


def _batch(ids: list[str], lengths: list[int], t: int = 6, audio_len: int = 60) -> VideoTextBatch:
    """Frames whose pixel value is the frame index + 1 (padding = 0); audio = a ramp 0..S-1."""
    b = len(ids)
    frames = torch.zeros(b, t, 3, 4, 4)
    mask = torch.zeros(b, t, dtype=torch.bool)
    times = torch.zeros(b, t)
    for i, n in enumerate(lengths):
        frames[i, :n] = torch.arange(1, n + 1).float().view(n, 1, 1, 1)
        mask[i, :n] = True
        times[i, :n] = torch.arange(n).float() + 0.5
    audio = torch.arange(audio_len).float().repeat(b, 1)  # (B, S)
    audio_lengths = torch.full((b,), audio_len)
    ids_t = torch.ones(b, 3, dtype=torch.long)
    return VideoTextBatch(
        ids_t,
        ids_t.clone(),
        ids_t.clone(),
        frames,
        mask,
        times,
        audio,
        audio_lengths,
        ids=list(ids),
        meta=[{} for _ in ids],
    )


def test_time_permutation_is_seeded_and_never_identity():
    for n in range(2, 9):
        for k in range(30):
            perm = time_permutation(n, 0, f"item{k}")
            assert sorted(perm.tolist()) == list(range(n))
            assert perm.tolist() != list(range(n))
    assert time_permutation(5, 3, "a").tolist() == time_permutation(5, 3, "a").tolist()
    assert time_permutation(1, 0, "a").tolist() == [0]


def test_time_control_permutes_frames_and_audio_keeps_timestamps():
    batch = _batch(["x", "y"], [6, 4])
    before = batch.frames.clone()
    times = batch.timestamps.clone()
    apply_time_control(batch, seed=0)
    assert torch.equal(batch.timestamps, times)  # timestamps stay in their original order
    for i, n in enumerate([6, 4]):
        perm = batch.meta[i]["time_permutation"]
        assert perm == time_permutation(n, 0, batch.ids[i]).tolist()
        assert torch.equal(batch.frames[i, :n], before[i, perm])  # content of t_perm[j] shown at t_j
        assert not torch.equal(batch.frames[i, :n], before[i, :n])
        assert torch.equal(batch.frames[i, n:], before[i, n:])  # padding untouched
        # audio: n equal windows of the 60-sample ramp, moved with the same permutation as the frames
        windows = np.array_split(np.arange(60), n)
        expected = np.concatenate([windows[k] for k in perm])
        assert batch.audio[i].tolist() == expected.tolist()


def test_time_control_does_not_depend_on_the_batch():
    alone = apply_time_control(_batch(["y"], [5]), seed=1)
    together = apply_time_control(_batch(["x", "y"], [5, 5]), seed=1)
    assert torch.equal(alone.frames[0], together.frames[1])
    assert alone.meta[0]["time_permutation"] == time_permutation(5, 1, "y").tolist()


def test_blind_control_zeroes_frames_and_silences_audio():
    batch = _batch(["x"], [6])
    mask, times = batch.frame_mask.clone(), batch.timestamps.clone()
    apply_blind_control(batch)
    assert batch.frames.abs().sum() == 0 and batch.audio.abs().sum() == 0
    assert torch.equal(batch.frame_mask, mask) and torch.equal(batch.timestamps, times)
    assert batch.audio_lengths.tolist() == [60]


def test_unknown_control_is_rejected():
    with pytest.raises(ValueError, match="unknown control 'reverse'"):
        control_transform("reverse")


def test_controlled_collator_on_real_videos(tokenizer, video_dir):
    """Decode real mp4 files through VideoCollator; the controls change exactly the video inputs."""
    collate = VideoCollator(tokenizer, num_frames=6, frame_size=32, audio=True, generation=True)
    samples = [
        ConversationSample(str(video_dir / f"v{i}.mp4"), [{"role": "user", "content": "When?"}], id=f"v{i}")
        for i in (1, 3)
    ]
    normal = ControlledCollator(collate, "normal")(samples)
    shuffled = ControlledCollator(collate, "time", seed=0)(samples)
    blind = ControlledCollator(collate, "blind")(samples)
    assert not torch.equal(normal.frames, shuffled.frames)
    for i in range(2):
        perm = shuffled.meta[i]["time_permutation"]
        assert torch.equal(shuffled.frames[i], normal.frames[i, perm])
        n = int(normal.audio_lengths[i])
        assert n > 0 and not torch.equal(shuffled.audio[i, :n], normal.audio[i, :n])
        assert torch.allclose(shuffled.audio[i, :n].sort().values, normal.audio[i, :n].sort().values)
    assert torch.equal(shuffled.timestamps, normal.timestamps) and torch.equal(
        shuffled.input_ids, normal.input_ids
    )
    assert normal.frames.abs().sum() > 0 and blind.frames.abs().sum() == 0 and blind.audio.abs().sum() == 0


def test_time_control_on_shared_clips_matches_one_clip_per_row(tokenizer, video_dir):
    """With ``share_clips`` (an item's options as rows of one clip) each clip is permuted once, by the order
    every one of its rows gets without sharing; ``share_by: sample`` keeps two items of one video apart (each
    gets its own permutation); rows of one clip asking for different orders are refused."""
    rows = [("v1", "a")] * 3 + [("v1", "b")] * 2 + [("v3", "c")]  # (video, item id): options of 3 items
    samples = [ConversationSample(str(video_dir / f"{v}.mp4"), [{"role": "user", "content": f"Option {k}?"}], id=i)
               for k, (v, i) in enumerate(rows)]  # fmt: skip
    settings = {"num_frames": 6, "frame_size": 32, "audio": True, "generation": True}
    plain = ControlledCollator(VideoCollator(tokenizer, **settings), "time", seed=0)(samples)
    shared = ControlledCollator(VideoCollator(tokenizer, **settings, share_clips=True, share_by="sample"), "time",
                                seed=0)(samples)  # fmt: skip
    assert shared.clip_index.tolist() == [0, 0, 0, 1, 1, 2] and shared.frames.shape[0] == 3
    assert torch.equal(shared.frames[shared.clip_index], plain.frames)
    assert torch.equal(shared.audio[shared.clip_index], plain.audio)
    assert [m["time_permutation"] for m in shared.meta] == [m["time_permutation"] for m in plain.meta]
    assert shared.meta[0]["time_permutation"] != shared.meta[3]["time_permutation"]  # one video, two items
    by_clip = VideoCollator(tokenizer, **settings, share_clips=True)(samples)  # share_by: clip
    assert by_clip.clip_index.tolist() == [0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="row 3: clip 0 is shared"):
        apply_time_control(by_clip, seed=0)
    with pytest.raises(ValueError, match="share_by must be"):
        VideoCollator(tokenizer, share_by="video")
