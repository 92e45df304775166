"""Several questions per clip in a batch: the grouped sampler, the collator's shared clips, and a model that
encodes each clip once and gives the same result as encoding every row."""

from __future__ import annotations

import pytest
import torch

from vidtempo.data.collate import VideoCollator
from vidtempo.data.grouping import VideoGroupedBatchSampler, clip_keys
from vidtempo.data.samples import ConversationSample
from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.models.encoders.mel_cnn import MelCNN
from vidtempo.models.encoders.presets import tiny_vision_encoder
from vidtempo.models.llms.presets import tiny_llm
from vidtempo.models.video_llm import VideoLLM
from vidtempo.synth.targets import SynthFrameSlots
from vidtempo.training.build import VideoDataModule


def test_sampler_draws_every_item_once_in_runs_of_one_clip() -> None:
    keys = [f"v{i % 7}" for i in range(50)]  # 7 clips, 7-8 questions each
    sampler = VideoGroupedBatchSampler(keys, batch_size=8, per_video=4, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(50)) and len(batches) == len(sampler)
    assert [len(b) for b in batches] == [8] * 6 + [2]  # full batches
    clips = [len({keys[i] for i in b}) for b in batches[:-1]]
    assert max(clips) <= 4 and sum(clips) / len(clips) <= 3  # runs of 4 (or the 3 left of a clip of 7)
    again = list(VideoGroupedBatchSampler(keys, batch_size=8, per_video=4, seed=3))
    assert again == batches  # deterministic for a seed and epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches  # another epoch, another draw
    plain = list(VideoGroupedBatchSampler(keys, batch_size=8, per_video=1, seed=3))
    assert sum(len({keys[i] for i in b}) for b in plain) > sum(len({keys[i] for i in b}) for b in batches)


def test_sampler_shards_ranks_evenly_and_checks_its_arguments() -> None:
    keys = [i // 3 for i in range(40)]
    shards = [list(VideoGroupedBatchSampler(keys, 6, 3, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # every rank the same number of batches
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat))  # no item on two ranks
    ordered = list(VideoGroupedBatchSampler(keys, 6, 3, shuffle=False))
    assert ordered[0] == [0, 1, 2, 3, 4, 5]
    assert [len(b) for b in VideoGroupedBatchSampler([0] * 10, 4, 10, shuffle=False)] == [4, 4, 2]
    with pytest.raises(ValueError, match="per_video must be >= 1"):
        VideoGroupedBatchSampler(keys, 4, 0)
    with pytest.raises(ValueError, match="rank must be in"):
        VideoGroupedBatchSampler(keys, 4, 2, num_replicas=2, rank=2)


def _samples(video_dir, names: list[str]) -> list[ConversationSample]:
    out = []
    for i, n in enumerate(names):
        turns = [{"role": "user", "content": f"<video>\nQuestion {i}?"}, {"role": "assistant", "content": f"{i} seconds"}]
        out.append(ConversationSample(str(video_dir / f"{n}.mp4"), turns, id=f"{n}_{i}"))
    return out


def test_collator_stacks_each_clip_once_and_keeps_rows_per_question(tokenizer, video_dir) -> None:
    samples = _samples(video_dir, ["v1", "v3", "v1", "v1"])
    kw = dict(num_frames=4, frame_size=32, audio=True, audio_mel=40, targets={"frame_targets": SynthFrameSlots()})
    shared = VideoCollator(tokenizer, share_clips=True, **kw)(samples)
    plain = VideoCollator(tokenizer, **kw)(samples)
    assert shared.clip_index.tolist() == [0, 1, 0, 0] and plain.clip_index is None
    assert shared.frames.shape[0] == 2 and plain.frames.shape[0] == 4
    assert torch.equal(shared.frames[shared.clip_index], plain.frames)
    assert torch.equal(shared.audio[shared.clip_index], plain.audio)
    assert torch.equal(shared.audio_lengths[shared.clip_index], plain.audio_lengths)
    for key in ("frame_mask", "timestamps", "input_ids", "labels"):  # one row per question, as before
        assert torch.equal(getattr(shared, key), getattr(plain, key)), key
    assert torch.equal(shared.targets["frame_targets"].isnan(), plain.targets["frame_targets"].isnan())
    assert shared.model_inputs()["video"].clip_index is shared.clip_index and plain.model_inputs()["video"].clip_index is None
    assert [k for k in clip_keys(samples)] == [(str(video_dir / f"{n}.mp4"), None, None, None)
                                               for n in ("v1", "v3", "v1", "v1")]  # fmt: skip


def test_model_encodes_each_clip_once_with_the_same_loss_and_gradients(tokenizer, video_dir) -> None:
    samples = _samples(video_dir, ["v2", "v0", "v2"])
    kw = dict(num_frames=4, frame_size=32, audio=True, audio_mel=40)
    shared = VideoCollator(tokenizer, share_clips=True, **kw)(samples)
    plain = VideoCollator(tokenizer, **kw)(samples)
    torch.manual_seed(0)
    enc = tiny_vision_encoder()
    model = VideoLLM(vision_encoder=enc, compressor=SpatialPoolCompressor(enc.out_dim, stride=4, audio_dim=8),
                     llm=tiny_llm(), audio_encoder=MelCNN(out_dim=8, n_mels=40, channels=(8,)),
                     trainable={"vision_encoder": True, "audio_encoder": True, "llm": True})  # fmt: skip
    calls, encode = [], enc.encode
    enc.encode = lambda pixels: calls.append(pixels.shape[0]) or encode(pixels)  # type: ignore[method-assign]
    grads, losses = [], []
    for batch in (plain, shared):
        model.zero_grad()
        out = model(**batch.model_inputs())
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        losses.append(out.loss.item())
    assert calls == [12, 8]  # 3 rows x 4 frames, then 2 distinct clips x 4 frames
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-5, rtol=1e-4), name


def test_datamodule_groups_questions_by_clip(tokenizer, video_dir) -> None:
    samples = _samples(video_dir, ["v0", "v1", "v0", "v1", "v2", "v0", "v2", "v1"])
    collator = VideoCollator(tokenizer, num_frames=2, frame_size=32, share_clips=True)
    module = VideoDataModule(samples, collator, batch_size=4, group_by_video=2, seed=1)
    batches = list(module.train_dataloader())
    assert sum(len(b) for b in batches) == 8
    assert all(b.frames.shape[0] == len(set(b.clip_index.tolist())) <= 3 for b in batches)
    assert sum(b.frames.shape[0] for b in batches) < 8  # some clips served two questions at once


def test_group_by_video_is_an_sft_setting(tokenizer, video_dir) -> None:
    from vidtempo.config.errors import RecipeError
    from vidtempo.data.preference_collate import PreferenceCollator
    from vidtempo.training.build import build_datamodule

    data = {"train": {"_target_": "conversation", "path": str(video_dir / "train.jsonl"),
                      "video_root": str(video_dir)},
            "collator": {"num_frames": 2, "frame_size": 32}, "batch_size": 2, "group_by_video": 2}  # fmt: skip
    module = build_datamodule(data, tokenizer, "r.yaml")
    assert module.collator.share_clips and module.group_by_video == 2
    with pytest.raises(RecipeError, match="group_by_video needs the SFT video collator, not PreferenceCollator"):
        build_datamodule(data, tokenizer, "r.yaml", collator_class=PreferenceCollator)
