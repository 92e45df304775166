"""The per-frame tag loss on the vision encoder's own features (``objective.encoder_tag_weight``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vidtempo.config.errors import RecipeError
from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.models.encoders.presets import tiny_vision_encoder
from vidtempo.models.llms.presets import tiny_llm
from vidtempo.models.video_llm import VIDEO_TOKEN_INDEX, VideoLLM
from vidtempo.training.build import build_objective
from vidtempo.training.encoder_tags import EncoderTagLoss
from vidtempo.training.head_io import load_heads, save_heads
from vidtempo.training.sft import SFTModule


def tiny_model() -> VideoLLM:
    enc = tiny_vision_encoder()
    return VideoLLM(vision_encoder=enc, compressor=SpatialPoolCompressor(enc.out_dim, stride=4), llm=tiny_llm(),
                    trainable={"vision_encoder": True, "llm": True})  # fmt: skip


def test_loss_is_the_bce_of_max_pooled_features_over_valid_known_frames_of_its_columns():
    loss_fn = EncoderTagLoss(feature_dim=2, slots=[0, 2])
    with torch.no_grad():
        loss_fn.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        loss_fn.head.bias.zero_()
    feats = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]], [[0.0, 3.0], [-1.0, 1.0]], [[9.0, 9.0], [9.0, 9.0]]]])  # (1,3,2,2)
    nan = float("nan")
    tags = torch.tensor([[[1.0, 5.0, 0.0], [0.0, 5.0, nan], [1.0, 5.0, 1.0]]])  # column 1 is never read
    mask = torch.tensor([[True, True, False]])  # frame 2 is padding
    loss = loss_fn(feats, mask, tags)
    # max over the 2 patches: frame 0 -> (2, 0), frame 1 -> (0, 3); frame 1's column 2 is unknown
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, 0.0, 0.0]),
                                                                    torch.tensor([1.0, 0.0, 0.0]))  # fmt: skip
    torch.testing.assert_close(loss, expected)
    none_known = loss_fn(feats, torch.zeros(1, 3, dtype=torch.bool), tags)
    assert none_known.item() == 0.0 and none_known.requires_grad
    with pytest.raises(ValueError, match="slot 2 requested, but batch.frame_tags has 2 tags"):
        loss_fn(feats, mask, tags[..., :2])
    with pytest.raises(ValueError, match=r"disagree on \(B, T\)"):
        loss_fn(feats[:, :2], mask, tags)


def test_it_trains_the_encoder_directly_and_never_the_llm():
    """Frames are red or blue; the tag says which. The loss reads the encoder's features before the compressor:
    its gradient reaches the encoder and not the LLM, and training encoder + head brings it well below chance."""
    torch.manual_seed(0)
    module = SFTModule(tiny_model(), encoder_tag_weight=1.0, num_tags=2)
    ids = torch.tensor([[3, 4, VIDEO_TOKEN_INDEX, 5]] * 4)

    def batch_and_out() -> tuple[SimpleNamespace, object]:
        red = torch.rand(4, 3) > 0.5  # (B, T)
        colour = torch.where(red[..., None], torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9]))
        frames = colour[..., None, None].expand(4, 3, 3, 32, 32) + torch.rand(4, 3, 3, 32, 32) * 0.1
        tags = torch.stack([red, ~red], -1).float()  # (B, T, 2)
        batch = SimpleNamespace(frame_mask=torch.ones(4, 3, dtype=torch.bool), frame_tags=tags)
        return batch, module.model(input_ids=ids, attention_mask=torch.ones_like(ids), frames=frames)

    batch, out = batch_and_out()
    module._encoder_tag_loss(out, batch).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.vision_encoder.parameters())
    assert all(p.grad is None for p in module.model.llm.parameters())
    assert all(p.grad is None for p in module.model.compressor.parameters())
    params = list(module.model.vision_encoder.parameters()) + list(module.encoder_tags.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    first = last = None
    for _ in range(40):
        opt.zero_grad()
        batch, out = batch_and_out()
        loss = module._encoder_tag_loss(out, batch)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert first > 0.5 and last < 0.2


def test_recipe_keys_errors_and_the_head_is_saved_with_the_others(tmp_path):
    with pytest.raises(ValueError, match="num_tags"):
        SFTModule(tiny_model(), encoder_tag_weight=1.0)
    stage = {"objective": {"_target_": "sft", "tag_weight": 1.0, "encoder_tag_weight": 0.5, "encoder_tag_slots": 2},
             "optim": {"lr": 1e-3}, "data": {"collator": {"frame_tags": ["a", "b", "beep"]}}}  # fmt: skip
    module = build_objective(stage, tiny_model(), "r.yaml", "")
    assert module.tags.head.out_features == 3 and module.encoder_tags.head.out_features == 2
    assert set(module.frame_heads()) == {"tags", "encoder_tags"}
    save_heads(module, tmp_path)
    other = build_objective(stage, tiny_model(), "r.yaml", "")
    assert sorted(load_heads(other, tmp_path)) == ["encoder_tags", "tags"]
    torch.testing.assert_close(other.encoder_tags.head.weight, module.encoder_tags.head.weight)
    stage["objective"].pop("tag_weight")
    stage["data"]["collator"] = {}
    with pytest.raises(RecipeError, match="encoder_tag_weight > 0 needs data.collator.frame_tags"):
        build_objective(stage, tiny_model(), "r.yaml", "")
    batch = SimpleNamespace(frame_tags=None)
    with pytest.raises(ValueError, match="data.collator.frame_tags"):
        module._encoder_tag_loss(SimpleNamespace(info={}), batch)


def test_grouped_batches_give_each_row_its_clips_features():
    """With ``clip_index`` (several questions of one video in a batch) each clip is encoded once; the features
    the loss reads are per row again, so they line up with the rows' frame_tags."""
    torch.manual_seed(0)
    model = tiny_model().eval()
    ids = torch.tensor([[3, 4, VIDEO_TOKEN_INDEX, 5]] * 3)
    clips = torch.rand(2, 3, 3, 32, 32)  # (U, T, 3, H, W): 2 distinct clips for 3 rows
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), frames=clips, clip_index=torch.tensor([1, 0, 1]))
    feats = out.info["frame_features"]  # (B, T, P, D)
    assert feats.shape[:2] == (3, 3)
    torch.testing.assert_close(feats[0], feats[2])
    alone = model(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]), frames=clips[1:])
    torch.testing.assert_close(feats[0], alone.info["frame_features"][0])
    assert not torch.equal(feats[0], feats[1])
