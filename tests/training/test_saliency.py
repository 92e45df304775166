"""The per-frame saliency and tag losses (auxiliary-loss plug-ins): targets from annotated intervals, the loss
itself, and SFT training with it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vidtempo.config.errors import RecipeError
from vidtempo.data.samples import ConversationSample
from vidtempo.data.targets import EventTags
from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.models.encoders.presets import tiny_vision_encoder
from vidtempo.models.interfaces import VideoInputs
from vidtempo.models.llms.presets import tiny_llm
from vidtempo.models.video_llm import VIDEO_TOKEN_INDEX, VideoLLM, video_spans
from vidtempo.synth.targets import (
    ALL_SEEN_SLOT,
    ANY_SEEN_SLOT,
    FRAME_TARGET_SLOTS,
    SEEN_OFFSET,
    interval_targets,
    option_intervals,
    sample_intervals,
)
from vidtempo.training.auxiliary import FrameSaliencyLoss, FrameTagLoss, SaliencyLoss, TokenFrameReadout
from vidtempo.training.optim import OptimSettings
from vidtempo.training.schema import validate_recipe
from vidtempo.training.sft import SFTModule


def sample(meta: dict) -> ConversationSample:
    return ConversationSample(video=None, messages=[{"role": "user", "content": "q"}], id="s", meta=meta)


def test_intervals_from_synth_and_charades_style_meta_and_none_for_merged_or_missing():
    assert sample_intervals(sample({"timestamps": [1.0, 2.5]})) == [(1.0, 2.5)]
    assert sample_intervals(sample({"timestamps": [[0, 1], [3, 4]]})) == [(0.0, 1.0), (3.0, 4.0)]
    assert sample_intervals(sample({"timestamps": [1.0, 2.5], "turns": 3})) is None  # several questions
    assert sample_intervals(sample({})) is None
    with pytest.raises(ValueError, match="meta.timestamps"):
        sample_intervals(sample({"timestamps": ["a", "b"]}))


def test_interval_targets_mark_inside_frames_and_nan_for_padding_and_unknown():
    times = torch.tensor([[0.5, 1.5, 2.5, 3.5], [0.5, 1.5, 2.5, 0.0], [0.5, 1.5, 2.5, 3.5]])
    mask = torch.tensor([[True] * 4, [True, True, True, False], [True] * 4])
    options = {"option_timestamps": [[0, 1], None, [[1, 2], [3, 4]], [2, 3]]}
    out = interval_targets([sample({"timestamps": [1.0, 3.0]}), sample({"timestamps": [[0, 1]]}), sample(options)],
                           times, mask)  # fmt: skip
    assert out.shape == (3, 4, FRAME_TARGET_SLOTS)
    assert out[0, :, 0].tolist() == [0.0, 1.0, 1.0, 0.0] and torch.isnan(out[0, :, 1:]).all()
    assert out[1, :3, 0].tolist() == [1.0, 0.0, 0.0] and torch.isnan(out[1, 3]).all()
    assert torch.isnan(out[2, :, 0]).all() and torch.isnan(out[2, :, 2]).all()  # no moment; option B names none
    assert out[2, :, 1].tolist() == [1.0, 0.0, 0.0, 0.0] and out[2, :, 3].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert out[2, :, 4].tolist() == [0.0, 0.0, 1.0, 0.0] and torch.isnan(out[2, :, 5]).all()
    seen = out[2, :, SEEN_OFFSET + 1 : SEEN_OFFSET + 5]  # (T, 4) "option k has begun by this frame"
    assert seen[:, 0].tolist() == [1.0, 1.0, 1.0, 1.0] and torch.isnan(seen[:, 1]).all()
    assert seen[:, 2].tolist() == [0.0, 1.0, 1.0, 1.0] and seen[:, 3].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert seen.nan_to_num(0).sum(0).argmax() == 0  # summed over frames: the option that appears first
    assert torch.isnan(out[2, :, ANY_SEEN_SLOT:]).all()  # option B names no moment: some/every is unknown
    full = sample({"option_timestamps": [[1, 2], [[3, 4], [0.6, 0.9]], [2, 3]]})  # starts 1, 0.6, 2
    both = interval_targets([full], times[:1], mask[:1])[0]
    assert both[:, ANY_SEEN_SLOT].tolist() == [0.0, 1.0, 1.0, 1.0]  # 0.6 <= 1.5: the first option has begun
    assert both[:, ALL_SEEN_SLOT].tolist() == [0.0, 0.0, 1.0, 1.0]  # the last option begins at 2.0
    merged = sample({**options, "turns": 2})
    assert option_intervals(merged) == [] and torch.isnan(interval_targets([merged], times[:1], mask[:1])).all()


def test_video_spans_with_left_padding_and_rows_without_video():
    ids = torch.tensor([[0, 0, 4, VIDEO_TOKEN_INDEX, 5], [4, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert video_spans(ids, mask, torch.tensor([6, 0])) == [(1, 6), (0, 0)]


def test_saliency_loss_skips_rows_without_targets_and_needs_equal_tokens_per_frame():
    loss_fn = FrameSaliencyLoss(hidden_size=4, slots=1)
    hidden = torch.randn(2, 7, 4, requires_grad=True)
    ids = torch.tensor([[1, VIDEO_TOKEN_INDEX, 2], [1, VIDEO_TOKEN_INDEX, 2]])
    frame_mask = torch.ones(2, 2, dtype=torch.bool)
    targets = torch.tensor([[1.0, 0.0], [float("nan"), float("nan")]])
    loss = loss_fn(hidden, ids, torch.ones_like(ids), torch.tensor([4, 4]), frame_mask, targets)
    loss.backward()
    assert hidden.grad[0, 1:5].abs().sum() > 0  # the video positions of row 0 get gradient
    assert hidden.grad[1].abs().sum() == 0 and hidden.grad[0, [0, 5, 6]].abs().sum() == 0
    with pytest.raises(ValueError, match="same number of video tokens per frame"):
        loss_fn(hidden, ids, torch.ones_like(ids), torch.tensor([3, 3]), frame_mask, targets)
    none = loss_fn(hidden, ids, torch.ones_like(ids), torch.tensor([4, 4]), frame_mask, torch.full_like(targets, float("nan")))
    assert none.item() == 0.0 and none.requires_grad


def test_reductions_weigh_samples_or_targets_and_a_head_reads_its_slots():
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 4)  # 2 rows: 1 text token, 4 frames x 1 token, 1 text token
    ids = torch.tensor([[1, VIDEO_TOKEN_INDEX, 2], [1, VIDEO_TOKEN_INDEX, 2]])
    args = (hidden, ids, torch.ones_like(ids), torch.tensor([4, 4]), torch.ones(2, 4, dtype=torch.bool))
    targets = torch.full((2, 4, 3), float("nan"))
    targets[0, :, 0] = torch.tensor([1.0, 0.0, 0.0, 1.0])  # row 0: 4 known targets
    targets[1] = torch.tensor([[1.0, 0.0, 1.0]] * 4)  # row 1: 12 known targets
    by_sample, by_entry = FrameSaliencyLoss(4, slots=3), FrameSaliencyLoss(4, slots=3, reduction="entry")
    by_entry.load_state_dict(by_sample.state_dict())
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    logits = by_sample.head(hidden[:, 1:5])  # (2, 4, 3)
    row0, row1 = bce(logits[0, :, 0], targets[0, :, 0]), bce(logits[1], targets[1])
    assert torch.allclose(by_sample(*args, targets), (row0 + row1) / 2)
    assert torch.allclose(by_entry(*args, targets), (4 * row0 + 12 * row1) / 16)
    small = FrameSaliencyLoss(4, slots=1)
    small.head.weight.data, small.head.bias.data = by_sample.head.weight[:1].clone(), by_sample.head.bias[:1].clone()
    slot0 = (row0 + bce(logits[1, :, 0], targets[1, :, 0])) / 2
    assert torch.allclose(small(*args, targets), slot0)  # the other 2 slots are left out
    picked = FrameSaliencyLoss(4, slots=[2, 0])  # a list: these slots, in this order
    picked.head.weight.data = by_sample.head.weight[[2, 0]].clone()
    picked.head.bias.data = by_sample.head.bias[[2, 0]].clone()
    row1_picked = bce(logits[1][:, [2, 0]], targets[1][:, [2, 0]])
    assert torch.allclose(picked(*args, targets), (row0 + row1_picked) / 2)
    with pytest.raises(ValueError, match="saliency slot 5 requested, but the targets have 3 slots"):
        FrameSaliencyLoss(4, slots=[0, 5])(*args, targets)
    for bad in (0, [], [1, 1], [-1], "0"):
        with pytest.raises(ValueError, match="saliency slots must be"):
            FrameSaliencyLoss(4, slots=bad)
    with pytest.raises(ValueError, match="reduction must be"):
        FrameSaliencyLoss(4, reduction="mean")


def tiny_model() -> VideoLLM:
    enc = tiny_vision_encoder()
    return VideoLLM(vision_encoder=enc, compressor=SpatialPoolCompressor(enc.out_dim, stride=4), llm=tiny_llm(),
                    trainable={"vision_encoder": True, "llm": True})  # fmt: skip


def test_sft_with_saliency_learns_per_frame_targets_through_the_llm():
    """Frames are bright or dark; the target is "bright". Only the head, the LLM and the encoder can
    carry that to the per-frame score: the saliency loss must fall well below chance (ln 2)."""
    torch.manual_seed(0)
    module = SFTModule(tiny_model(), OptimSettings(lr=3e-3), aux={"saliency": SaliencyLoss(slots=1)},
                       targets={"frame_targets": 1})  # fmt: skip
    opt = torch.optim.AdamW(list(module.model.parameters()) + list(module.aux.parameters()), lr=3e-3)
    ids = torch.tensor([[3, 4, VIDEO_TOKEN_INDEX, 5]] * 4)
    first = last = None
    for _ in range(60):
        bright = torch.rand(4, 6) > 0.5  # (B, T)
        frames = torch.rand(4, 6, 3, 32, 32) * 0.2 + bright[..., None, None, None] * 0.8
        batch = SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clamp(min=0),
                                frame_mask=torch.ones(4, 6, dtype=torch.bool),
                                targets={"frame_targets": bright.float()[..., None]})  # fmt: skip
        batch.model_inputs = lambda b=batch, f=frames: {"input_ids": b.input_ids, "attention_mask": b.attention_mask,
                                                        "labels": b.labels, "video": VideoInputs(frames=f)}  # fmt: skip
        out = module(batch)
        sal = module.aux["saliency"](out, batch)
        (out.loss + sal).backward()
        opt.step()
        opt.zero_grad()
        first = sal.item() if first is None else first
        last = sal.item()
    assert first > 0.5 and last < 0.2


def test_heads_read_the_chosen_hidden_state_and_name_a_missing_one():
    """layer=1: the saliency head reads block 0's output, so its loss trains block 0 and the embeddings but
    not block 1 (the tiny LLM has 2 blocks); the tag head keeps the final state. A layer the LLM does not
    have is an error naming the option."""
    torch.manual_seed(0)
    aux = {"saliency": SaliencyLoss(slots=1, layer=1), "tag": FrameTagLoss()}
    module = SFTModule(tiny_model(), aux=aux, targets={"frame_targets": 1, "frame_tags": 2})
    assert module.needs_hidden and module.aux["tag"].scorer.head.out_features == 2
    ids = torch.tensor([[3, 4, VIDEO_TOKEN_INDEX, 5]] * 2)
    batch = SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids),
                            frame_mask=torch.ones(2, 3, dtype=torch.bool),
                            targets={"frame_targets": torch.rand(2, 3, 1).round(),
                                     "frame_tags": torch.rand(2, 3, 2).round()})  # fmt: skip
    out = module.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                       video=VideoInputs(frames=torch.rand(2, 3, 3, 32, 32)), return_hidden=True)  # fmt: skip
    assert len(out.hidden_states) == 3 and out.hidden_states[-1] is out.last_hidden_state
    module.aux["saliency"](out, batch).backward(retain_graph=True)
    grads = {n: p.grad for n, p in module.model.llm.named_parameters()}
    assert all(g is None or not g.any() for n, g in grads.items() if "layers.1." in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "layers.0." in n)
    module.model.zero_grad()
    module.aux["tag"](out, batch).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in module.model.llm.named_parameters() if "layers.1." in n)  # fmt: skip
    module.aux["saliency"].layer = 5
    with pytest.raises(ValueError, match=r"SaliencyLoss layer=5 is out of range: the LLM has 3"):
        module.aux["saliency"](out, batch)


def _recipe(collator: dict, aux: dict) -> dict:
    data = {"train": {"_target_": "conversation", "path": "x.jsonl"}, "collator": collator}
    return {"model": {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
                      "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}},
            "data": data, "objective": {"_target_": "sft", "aux": aux}}  # fmt: skip


def test_recipe_validation_names_the_aux_loss_and_the_missing_collator_setting():
    saliency = {"saliency": {"_target_": "saliency", "slots": 1}}
    slots = {"frame_targets": {"_target_": "synth_frame_slots"}}
    validate_recipe(_recipe({"video_position": "after_text", "targets": slots}, saliency), "r.yaml")
    with pytest.raises(RecipeError, match=r"objective.aux.saliency.*frame_targets.*no data.collator.targets"):
        validate_recipe(_recipe({"video_position": "after_text"}, saliency), "r.yaml")
    with pytest.raises(RecipeError, match=r"objective.aux.saliency.*video_position: after_text"):
        validate_recipe(_recipe({"targets": slots}, saliency), "r.yaml")
    with pytest.raises(RecipeError, match=r"objective.aux.nope._target_.*unknown aux_loss 'nonsense'"):
        validate_recipe(_recipe({}, {"nope": {"_target_": "nonsense"}}), "r.yaml")


def test_event_tags_mark_each_label_where_its_events_cover_the_frame():
    times = torch.tensor([[0.5, 1.5, 2.5], [0.5, 1.5, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    events = {"events": [["cat", 0.0, 1.0], ["dog", 1.0, 3.0], ["cat", 2.0, 2.8]]}
    out = EventTags(["dog", "cat", "bird"])([sample(events), sample({})], times, mask)
    assert out[0].tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert torch.isnan(out[1]).all()
    assert EventTags(["dog"])([sample({"events": [["horse", 0, 1]]})], times[:1], mask[:1]).sum() == 0  # ignored
    with pytest.raises(ValueError, match="label, start, end"):
        EventTags(["dog"])([sample({"events": [["dog", 0]]})], times[:1], mask[:1])
    beep = {"events": [["beep", 1.7, 1.9]]}  # between the frames at 1.5 and 2.5: no frame instant inside
    assert EventTags(["beep"])([sample(beep)], times[:1], mask[:1])[0, :, 0].tolist() == [0.0, 0.0, 0.0]
    heard = EventTags(["beep"], window=["beep"])([sample(beep)], times[:1], mask[:1])
    assert heard[0, :, 0].tolist() == [0.0, 1.0, 0.0]  # the frame at 1.5 hears up to 2.5
    with pytest.raises(ValueError, match="window labels"):
        EventTags(["dog"], window=["beep"])


def test_tag_head_is_sized_from_the_collators_targets_and_a_missing_target_names_the_loss():
    from vidtempo.training.build import build_objective

    stage = {"objective": {"_target_": "sft", "aux": {"tag": {"_target_": "frame_tags", "weight": 0.5}}},
             "optim": {"lr": 1e-3},
             "data": {"collator": {"targets": {"frame_tags": {"_target_": "event_tags", "labels": ["a", "b", "c"]}}}}}  # fmt: skip
    module = build_objective(stage, tiny_model(), "r.yaml", "")
    assert module.aux["tag"].scorer.head.out_features == 3 and module.aux["tag"].weight == 0.5
    stage["data"]["collator"] = {}
    with pytest.raises(RecipeError, match=r"objective.aux.tag.*frame_tags"):
        build_objective(stage, tiny_model(), "r.yaml", "")


def test_a_model_without_a_needed_capability_is_refused_naming_the_loss():
    """The native Qwen2.5-VL has hidden states but no per-frame token map: a saliency head is refused when the
    objective is built, with the loss's key and what the model provides."""
    from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl
    from vidtempo.training.build import build_objective

    stage = {"objective": {"_target_": "sft", "aux": {"saliency": {"_target_": "saliency"}}}, "optim": {},
             "data": {"collator": {"targets": {"frame_targets": {"_target_": "synth_frame_slots"}}}}}  # fmt: skip
    with pytest.raises(RecipeError, match=r"objective.aux.saliency.*'token_frames'.*Qwen25VLVideoModel.*hidden_states"):
        build_objective(stage, Qwen25VLVideoModel(llm=tiny_qwen2_5_vl()), "r.yaml", "")


def test_token_frames_average_each_frames_own_tokens():
    """A compressor with a varying number of tokens per frame (TDC) reports each token's frame."""
    loss_fn = FrameSaliencyLoss(hidden_size=2, slots=1)
    with torch.no_grad():
        loss_fn.head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        loss_fn.head.bias.zero_()
    hidden = torch.tensor([[1.0, 0], [3.0, 0], [5.0, 0], [7.0, 0]])  # 4 video tokens
    scores, has = loss_fn.frame_scores(hidden, (0, 4), 3, torch.tensor([0, 0, 0, 2]))
    assert scores[:, 0].tolist() == [3.0, 0.0, 7.0] and has.tolist() == [True, False, True]
    ids = torch.tensor([[VIDEO_TOKEN_INDEX]])
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    loss = loss_fn(hidden[None], ids, torch.ones_like(ids), torch.tensor([4]), torch.ones(1, 3, dtype=torch.bool),
                   targets, torch.tensor([[0, 0, 0, 2, -1]]))  # fmt: skip
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([3.0, 7.0]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(loss, expected)  # frame 1 has no token (trimmed): left out


def test_token_readout_equals_a_hand_computation_and_reads_only_the_video_positions():
    """Tokens that do not belong to frames (Q-Former queries): a linear readout maps a row's N video tokens to
    F frame states. The loss equals the BCE of the head on them, written out by hand; text positions and
    padding do not move it; a batch with more frames than F, or a row with other than N tokens, is refused."""
    torch.manual_seed(0)
    loss_fn = FrameSaliencyLoss(hidden_size=4, slots=1, tokens=3, frames=3, rank=2)
    hidden = torch.randn(2, 7, 4)  # row 0: text, 3 video tokens, text; row 1: 3 video tokens after 2 text
    ids = torch.tensor([[1, VIDEO_TOKEN_INDEX, 2, 2, 2], [1, 1, VIDEO_TOKEN_INDEX, 2, 2]])
    mask = torch.ones_like(ids)
    n = torch.tensor([3, 3])
    frame_mask = torch.tensor([[True, True, True], [True, True, False]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, float("nan")]])
    readout = loss_fn.readout
    assert isinstance(readout, TokenFrameReadout)
    with torch.no_grad():
        readout.mix.add_(torch.rand(3, 3))  # away from its interpolation start, so every token counts
    expected = []
    for row, start in enumerate([1, 2]):
        states = torch.nn.functional.layer_norm(hidden[row, start : start + 3], (4,), readout.norm.weight,
                                                readout.norm.bias)  # fmt: skip
        z = states @ readout.down.weight.T + readout.down.bias  # (3 tokens, rank 2)
        frames = readout.mix @ z  # (F, rank): frame f mixes the tokens with its row of weights
        logits = (frames @ loss_fn.head.weight.T + loss_fn.head.bias)[:, 0]
        known = ~torch.isnan(targets[row]) & frame_mask[row]
        expected.append(torch.nn.functional.binary_cross_entropy_with_logits(logits[known], targets[row][known]))
    loss = loss_fn(hidden, ids, mask, n, frame_mask, targets)
    torch.testing.assert_close(loss, (expected[0] + expected[1]) / 2)
    moved = hidden.clone()
    moved[0, [0, 4, 5, 6]] += 5.0  # row 0's text and padding
    moved[1, [0, 1, 5, 6]] -= 3.0  # row 1's text and padding
    torch.testing.assert_close(loss_fn(moved, ids, mask, n, frame_mask, targets), loss)
    scores, has = loss_fn.frame_scores(hidden[0], (1, 3), 3)
    assert has.tolist() == [True, True, True] and scores.shape == (3, 1)
    with pytest.raises(ValueError, match="4 frames, but the token readout was built for frames=3"):
        loss_fn(hidden, ids, mask, n, torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="sample 1: 4 video tokens, but the token readout was built for tokens=3"):
        loss_fn(hidden, ids, mask, torch.tensor([3, 4]), frame_mask, targets)
    with pytest.raises(ValueError, match="needs both tokens and frames"):
        SaliencyLoss(tokens=4)
    with pytest.raises(ValueError, match="must be >= 1"):
        SaliencyLoss(tokens=4, frames=0)


def test_token_readout_starts_by_reading_each_frames_place_in_the_token_sequence():
    """The mixing weights start as linear interpolation: with 4 tokens for 7 frames, frame f reads token
    f / 2 (between two tokens: half of each)."""
    mix = TokenFrameReadout(hidden_size=4, tokens=4, frames=7).mix
    assert mix.shape == (7, 4) and torch.allclose(mix.sum(1), torch.ones(7))
    assert mix[0].tolist() == [1.0, 0.0, 0.0, 0.0] and mix[1].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert mix[6].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert TokenFrameReadout(hidden_size=4, tokens=3, frames=1).mix.tolist() == [[1.0, 0.0, 0.0]]


def test_token_readout_learns_per_frame_targets_spread_over_all_tokens():
    """Each of 6 tokens holds a random mix of the whole 6-frame pattern (as a Q-Former query may): no token is
    a frame, yet the readout recovers every frame's target, far below chance (ln 2)."""
    torch.manual_seed(0)
    loss_fn = FrameSaliencyLoss(hidden_size=8, slots=1, tokens=6, frames=6, rank=8)
    code = torch.randn(6, 8, 6)  # token k's state = code[k] @ pattern
    ids = torch.tensor([[3, VIDEO_TOKEN_INDEX, 5]] * 16)
    opt = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        bright = (torch.rand(16, 6) > 0.5).float()  # (B, T)
        video = torch.einsum("khf,bf->bkh", code, bright * 2 - 1)  # (B, 6, 8)
        hidden = torch.cat([torch.randn(16, 1, 8), video, torch.randn(16, 1, 8)], dim=1)
        loss = loss_fn(hidden, ids, torch.ones_like(ids), torch.full((16,), 6), torch.ones(16, 6, dtype=torch.bool),
                       bright)  # fmt: skip
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 0.5 and sum(losses[-10:]) / 10 < 0.1, losses[::20]


def test_a_q_former_model_takes_the_token_readout_and_its_gradient_reaches_the_compressor():
    """DaMO's Q-Former queries each read the whole clip: without ``tokens`` / ``frames`` the saliency loss
    refuses the model and says what to set; with them it binds (the SFT objective builds it from the recipe
    keys), and one step's gradient reaches the compressor's queries, the vision encoder and the LLM."""
    from vidtempo.models.build import build_video_llm
    from vidtempo.training.auxiliary import AuxLossError, bind_aux

    comp = {"_target_": "t_fuseformer", "in_dim": 32, "width": 16, "num_heads": 2, "depth": 1, "visual_queries": 6,
            "audio_queries": 2, "fusion_tokens": 4, "num_queries": 4, "local_grid": [2, 2], "qformer": "tiny"}
    model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
                             "compressor": comp, "projector": {"_target_": "linear", "in_dim": 32, "out_dim": 64},
                             "llm": {"_target_": "tiny"},
                             "trainable": {"vision_encoder": True, "compressor": True, "projector": True,
                                           "llm": True}})  # fmt: skip
    assert "token_frames" not in model.capabilities
    with pytest.raises(AuxLossError, match=r"'token_frames'.*set the loss's tokens .* and frames"):
        bind_aux({"saliency": SaliencyLoss(slots=1)}, model, {"frame_targets": 1})
    module = SFTModule(model, aux={"saliency": SaliencyLoss(slots=1, tokens=4, frames=6)}, targets={"frame_targets": 1})
    ids = torch.tensor([[3, 4, VIDEO_TOKEN_INDEX, 5]] * 2)
    out = module.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                       video=VideoInputs(frames=torch.rand(2, 6, 3, 32, 32)), return_hidden=True)  # fmt: skip
    batch = SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids), frame_mask=torch.ones(2, 6, dtype=torch.bool),
                            targets={"frame_targets": torch.rand(2, 6, 1).round()})  # fmt: skip
    module.aux["saliency"](out, batch).backward()
    for part in ("vision_encoder", "compressor", "llm"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, part).parameters()), part
    assert model.compressor.query_tokens.grad.abs().sum() > 0
