"""The per-frame tag loss on the vision encoder's own features (auxiliary loss ``encoder_tags``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vidtempo.config.errors import RecipeError
from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.models.encoders.presets import tiny_vision_encoder
from vidtempo.models.interfaces import VideoInputs
from vidtempo.models.llms.presets import tiny_llm
from vidtempo.models.video_llm import VIDEO_TOKEN_INDEX, VideoLLM
from vidtempo.training.auxiliary import EncoderTagHead, EncoderTagLoss, FrameTagLoss
from vidtempo.training.build import build_objective
from vidtempo.training.head_io import LEGACY_HEADS_NAME, load_heads, save_heads
from vidtempo.training.sft import SFTModule


def tiny_model() -> VideoLLM:
    enc = tiny_vision_encoder()
    return VideoLLM(vision_encoder=enc, compressor=SpatialPoolCompressor(enc.out_dim, stride=4), llm=tiny_llm(),
                    trainable={"vision_encoder": True, "llm": True})  # fmt: skip


def test_loss_is_the_bce_of_max_pooled_features_over_valid_known_frames_of_its_columns():
    loss_fn = EncoderTagHead(feature_dim=2, slots=[0, 2])
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
    with pytest.raises(ValueError, match="slot 2 requested, but the tag target has 2 channels"):
        loss_fn(feats, mask, tags[..., :2])
    with pytest.raises(ValueError, match=r"disagree on \(B, T\)"):
        loss_fn(feats[:, :2], mask, tags)


def test_it_trains_the_encoder_directly_and_never_the_llm():
    """Frames are red or blue; the tag says which. The loss reads the encoder's features before the compressor:
    its gradient reaches the encoder and not the LLM, and training encoder + head brings it well below chance."""
    torch.manual_seed(0)
    module = SFTModule(tiny_model(), aux={"encoder_tag": EncoderTagLoss()}, targets={"frame_tags": 2})
    assert not module.needs_hidden  # it reads the encoder's features, not the LLM's states
    loss_fn = module.aux["encoder_tag"]
    ids = torch.tensor([[3, 4, VIDEO_TOKEN_INDEX, 5]] * 4)

    def batch_and_out() -> tuple[SimpleNamespace, object]:
        red = torch.rand(4, 3) > 0.5  # (B, T)
        colour = torch.where(red[..., None], torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9]))
        frames = colour[..., None, None].expand(4, 3, 3, 32, 32) + torch.rand(4, 3, 3, 32, 32) * 0.1
        tags = torch.stack([red, ~red], -1).float()  # (B, T, 2)
        batch = SimpleNamespace(frame_mask=torch.ones(4, 3, dtype=torch.bool), targets={"frame_tags": tags})
        return batch, module.model(input_ids=ids, attention_mask=torch.ones_like(ids), video=VideoInputs(frames=frames))

    batch, out = batch_and_out()
    loss_fn(out, batch).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.vision_encoder.parameters())
    assert all(p.grad is None for p in module.model.llm.parameters())
    assert all(p.grad is None for p in module.model.compressor.parameters())
    params = list(module.model.vision_encoder.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    first = last = None
    for _ in range(40):
        opt.zero_grad()
        batch, out = batch_and_out()
        loss = loss_fn(out, batch)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert first > 0.5 and last < 0.2


def test_recipe_errors_and_the_head_is_saved_and_handed_over_with_the_others(tmp_path):
    tags = {"_target_": "event_tags", "labels": ["a", "b", "beep"]}
    stage = {"objective": {"_target_": "sft", "aux": {"tag": {"_target_": "frame_tags"},
                                                      "encoder_tag": {"_target_": "encoder_tags", "weight": 0.5,
                                                                      "slots": 2}}},
             "optim": {"lr": 1e-3}, "data": {"collator": {"targets": {"frame_tags": tags}}}}  # fmt: skip
    module = build_objective(stage, tiny_model(), "r.yaml", "")
    assert module.aux["tag"].scorer.head.out_features == 3
    assert module.aux["encoder_tag"].scorer.head.out_features == 2 and module.aux["encoder_tag"].weight == 0.5
    save_heads(module, tmp_path)
    other = build_objective(stage, tiny_model(), "r.yaml", "")
    assert sorted(load_heads(other, tmp_path)) == ["encoder_tag", "tag"]
    torch.testing.assert_close(other.aux["encoder_tag"].scorer.head.weight, module.aux["encoder_tag"].scorer.head.weight)
    stage["data"]["collator"] = {}
    with pytest.raises(RecipeError, match=r"key 'objective.aux.tag': reads batch target 'frame_tags'"):
        build_objective(stage, tiny_model(), "r.yaml", "")
    with pytest.raises(ValueError, match="batch.targets\\['frame_tags'\\]"):
        module.aux["encoder_tag"](SimpleNamespace(info={"frame_features": torch.zeros(1, 1, 1, 32)}),
                                  SimpleNamespace(targets={}, frame_mask=None))  # fmt: skip


def test_heads_saved_before_auxiliary_losses_were_plug_ins_still_hand_over(tmp_path):
    """A ``final/`` of an earlier vidtempo holds ``frame_heads.safetensors`` with heads named ``tags`` /
    ``encoder_tags``: they load into the losses the recipes now call ``tag`` / ``encoder_tag``."""
    from safetensors.torch import save_file

    module = SFTModule(tiny_model(), aux={"tag": FrameTagLoss(), "encoder_tag": EncoderTagLoss()},
                       targets={"frame_tags": 2})  # fmt: skip
    old = {f"tags.{k}": torch.full_like(v, 0.25) for k, v in module.aux["tag"].scorer.state_dict().items()}
    old.update({f"encoder_tags.{k}": torch.full_like(v, 0.5)
                for k, v in module.aux["encoder_tag"].scorer.state_dict().items()})  # fmt: skip
    save_file(old, str(tmp_path / LEGACY_HEADS_NAME))
    assert sorted(load_heads(module, tmp_path)) == ["encoder_tag", "tag"]
    assert (module.aux["tag"].scorer.head.weight == 0.25).all()
    assert (module.aux["encoder_tag"].scorer.head.bias == 0.5).all()


def test_grouped_batches_give_each_row_its_clips_features():
    """With ``clip_index`` (several questions of one video in a batch) each clip is encoded once; the features
    the loss reads are per row again, so they line up with the rows' tag targets."""
    torch.manual_seed(0)
    model = tiny_model().eval()
    ids = torch.tensor([[3, 4, VIDEO_TOKEN_INDEX, 5]] * 3)
    clips = torch.rand(2, 3, 3, 32, 32)  # (U, T, 3, H, W): 2 distinct clips for 3 rows
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                video=VideoInputs(frames=clips, clip_index=torch.tensor([1, 0, 1])))  # fmt: skip
    feats = out.info["frame_features"]  # (B, T, P, D)
    assert feats.shape[:2] == (3, 3)
    torch.testing.assert_close(feats[0], feats[2])
    alone = model(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]), video=VideoInputs(frames=clips[1:]))
    torch.testing.assert_close(feats[0], alone.info["frame_features"][0])
    assert not torch.equal(feats[0], feats[1])
