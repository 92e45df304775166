"""DPOModule on a tiny VideoLLM: what trains, what the reference really is, input-side pairs, the loss value
against independently computed log-probs, skipped pairs and precomputed references."""

from __future__ import annotations

import copy

import pytest
import torch

from vidtempo.data.chat import IGNORE_INDEX
from vidtempo.data.collate import VideoCollator
from vidtempo.data.preference_collate import PreferenceCollator
from vidtempo.data.samples import ConversationSample, PreferenceSample
from vidtempo.models.build import build_video_llm
from vidtempo.training.dpo import DPOModule
from vidtempo.training.losses import dpo_loss, sequence_logps

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
PROMPT = [{"role": "user", "content": "<video>\nIn which order do the shapes appear?"}]
COLLATE = {"num_frames": 3, "frame_size": 32}


def tiny_model(llm: bool | str = "lora", **trainable):
    torch.manual_seed(0)
    plan = {"vision_encoder": False, "compressor": False, "projector": False, "llm": llm, **trainable}
    return build_video_llm({
        "_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
        "compressor": {"_target_": "pool", "in_dim": 32, "stride": 2},
        "llm": {"_target_": "tiny", "arch": "qwen2"}, "trainable": plan, "lora": LORA,
    })  # fmt: skip


def pairs(video_dir, input_side: bool = False) -> list[PreferenceSample]:
    out = []
    for i, (chosen, rejected) in enumerate(
        [("red then blue", "blue then red"), ("a circle, then a square", "a square")]
    ):
        rejected_video = str(video_dir / f"v{i + 2}.mp4") if input_side else None
        out.append(PreferenceSample(video=str(video_dir / f"v{i}.mp4"), prompt=PROMPT, chosen=chosen,
                                    rejected=chosen if input_side else rejected,
                                    rejected_video=rejected_video, id=f"p{i}",
                                    meta={"magnitude": 16}))  # fmt: skip
    return out


def single_logps(model, tokenizer, pair: PreferenceSample, answer: str, video: str) -> torch.Tensor:
    """log p(answer | prompt, video) from a batch of one, built without the preference collator."""
    conv = ConversationSample(video=video, messages=[*pair.prompt, {"role": "assistant", "content": answer}])
    batch = VideoCollator(tokenizer, **COLLATE)([conv])
    out = model(**batch.model_inputs())
    return sequence_logps(out.logits, out.labels)[0][0]


def test_lora_step_trains_exactly_the_adapters(tokenizer, video_dir):
    model = tiny_model()
    module = DPOModule(model, beta=0.1, rpo_alpha=1.0)
    assert module.reference.name == "adapter_off"
    batch = PreferenceCollator(tokenizer, **COLLATE)(pairs(video_dir))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):  # lora_B starts at 0, so lora_A only gets a gradient from the second step on
        opt.zero_grad()
        module(batch).loss.loss.backward()
        opt.step()
    for name, param in model.named_parameters():
        assert (not torch.equal(before[name], param.detach())) == (name in trainable), name


def test_adapter_off_reference_equals_the_base_model(tokenizer, video_dir):
    base = tiny_model(llm=False).eval()
    policy = copy.deepcopy(base)
    policy.set_trainable(type(policy.trainable)(compressor=False, projector=False, llm="lora"))
    with torch.no_grad():  # a non-trivial adapter: the policy now differs from the base
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    policy.eval()
    module = DPOModule(policy, reference="adapter_off")
    batch = PreferenceCollator(tokenizer, **COLLATE)(pairs(video_dir))
    out = module(batch)
    with torch.no_grad():
        expected = torch.stack(
            [single_logps(base, tokenizer, p, p.chosen, p.video) for p in pairs(video_dir)]
        )
        policy_alone = torch.stack(
            [single_logps(policy, tokenizer, p, p.chosen, p.video) for p in pairs(video_dir)]
        )
    torch.testing.assert_close(out.ref_chosen_logps, expected, rtol=1e-5, atol=1e-4)
    assert (out.policy_chosen_logps - expected).abs().max() > 1e-2  # the adapter is really on for the policy
    torch.testing.assert_close(out.policy_chosen_logps.detach(), policy_alone, rtol=1e-5, atol=1e-4)
    assert any("lora_" in n for n, _ in policy.named_parameters())  # adapter enabled again afterwards


def test_frozen_copy_reference_does_not_move(tokenizer, video_dir):
    model = tiny_model(llm=True)
    module = DPOModule(model, reference="auto")  # no LoRA -> frozen copy of the stage-start model
    assert module.reference.name == "frozen_copy"
    ref_model = module.reference.model
    assert not any(ref_model is m for m in module.modules())  # not a sub-module: not trained, not saved
    start = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
    batch = PreferenceCollator(tokenizer, **COLLATE)(pairs(video_dir))
    first = module(batch)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    first.loss.loss.backward()
    opt.step()
    last = module(batch)
    assert all(torch.equal(start[n], p) for n, p in ref_model.named_parameters())
    torch.testing.assert_close(last.ref_chosen_logps, first.ref_chosen_logps)
    torch.testing.assert_close(last.ref_rejected_logps, first.ref_rejected_logps)
    assert not torch.allclose(last.policy_chosen_logps, first.policy_chosen_logps)
    assert "model" in dict(module.named_children()) and all(
        not k.startswith("reference") for k in module.state_dict()
    )


def test_loss_equals_dpo_loss_on_independently_computed_logps(tokenizer, video_dir):
    model = tiny_model()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.3)
    model.eval()
    module = DPOModule(model, beta=0.1, rpo_alpha=1.0, loss_type="sigmoid")
    data = pairs(video_dir)
    out = module(PreferenceCollator(tokenizer, **COLLATE)(data))
    with torch.no_grad():
        pc = torch.stack([single_logps(model, tokenizer, p, p.chosen, p.video) for p in data])
        pr = torch.stack([single_logps(model, tokenizer, p, p.rejected, p.video) for p in data])
        with model.llm.model.disable_adapter():
            rc = torch.stack([single_logps(model, tokenizer, p, p.chosen, p.video) for p in data])
            rr = torch.stack([single_logps(model, tokenizer, p, p.rejected, p.video) for p in data])
    losses, chosen_rewards, _ = dpo_loss(pc, pr, rc, rr, beta=0.1)
    chosen_tokens = sum(len(tokenizer(p.chosen + "<|im_end|>\n")["input_ids"]) for p in data)
    expected = losses.mean() + 1.0 * (-pc.sum() / chosen_tokens)  # RPO: token-mean NLL of the chosen answers
    torch.testing.assert_close(out.loss.loss.detach(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss.chosen_rewards, chosen_rewards, rtol=1e-5, atol=1e-5)
    assert out.loss.accuracy.item() == ((pc - rc) > (pr - rr)).float().mean().item()


def test_input_side_pairs_score_the_rejected_answer_on_the_rejected_video(tokenizer, video_dir):
    data = pairs(video_dir, input_side=True)
    collate = PreferenceCollator(tokenizer, **COLLATE)
    batch = collate(data)
    assert batch.input_side.tolist() == [True, True]
    assert torch.equal(batch.chosen.input_ids, batch.rejected.input_ids)  # same answer, different video
    assert not torch.equal(batch.chosen.frames, batch.rejected.frames)
    own = collate.decode(ConversationSample(video=data[1].rejected_video, messages=[]))
    n = own.frames.shape[0]
    torch.testing.assert_close(batch.rejected.frames[1, :n], own.frames)
    model = tiny_model()
    out = DPOModule(model.eval())(batch)
    with torch.no_grad():
        expected = torch.stack(
            [single_logps(model, tokenizer, p, p.rejected, p.rejected_video) for p in data]
        )
    torch.testing.assert_close(out.policy_rejected_logps.detach(), expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(out.policy_rejected_logps, out.policy_chosen_logps)


def test_labels_cover_only_the_final_answer(tokenizer, video_dir):
    prompt = [{"role": "user", "content": "<video>\nWhat comes first?"},
              {"role": "assistant", "content": "red"}, {"role": "user", "content": "And then?"}]  # fmt: skip
    pair = PreferenceSample(video=str(video_dir / "v0.mp4"), prompt=prompt, chosen="blue", rejected="green")
    batch = PreferenceCollator(tokenizer, **COLLATE)([pair])
    for side, answer in ((batch.chosen, "blue"), (batch.rejected, "green")):
        labelled = side.labels[0][side.labels[0] != IGNORE_INDEX].tolist()
        assert tokenizer.decode(labelled) == f"{answer}<|im_end|>\n"


def test_undecodable_video_on_either_side_skips_the_whole_pair(tokenizer, video_dir, tmp_path):
    from vidtempo.data.testing import make_corrupt_video

    bad = make_corrupt_video(tmp_path / "bad.mp4")
    data = pairs(video_dir, input_side=True)
    data[0].rejected_video = str(bad)
    batch = PreferenceCollator(tokenizer, **COLLATE)(data)
    assert len(batch) == 1 and batch.ids == ["p1"] and len(batch.rejected) == 1
    assert [(s.id, s.path) for s in batch.skipped] == [("p0", str(bad))]
    module = DPOModule(tiny_model())
    module.skips.min_samples = 1
    module.skips.max_fraction = 0.4
    from vidtempo.training.skips import TooManySkippedError

    with pytest.raises(TooManySkippedError, match="bad.mp4"):
        module.training_step(batch, 0)


def test_precomputed_reference_reads_the_pairs_meta(tokenizer, video_dir):
    data = pairs(video_dir)
    for i, p in enumerate(data):
        p.meta.update(ref_chosen_logps=-10.0 - i, ref_rejected_logps=-12.0)
    module = DPOModule(tiny_model(), reference="precomputed")
    out = module(PreferenceCollator(tokenizer, **COLLATE)(data))
    assert out.ref_chosen_logps.tolist() == [-10.0, -11.0] and out.ref_rejected_logps.tolist() == [
        -12.0,
        -12.0,
    ]
    del data[1].meta["ref_chosen_logps"]
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        module(PreferenceCollator(tokenizer, **COLLATE)(data))


def test_reference_choice_follows_what_trains():
    assert DPOModule(tiny_model(projector=True)).reference.name == "frozen_copy"  # LoRA + projector
    with pytest.raises(ValueError, match="trainable non-adapter parameters"):
        DPOModule(tiny_model(projector=True), reference="adapter_off")
    with pytest.raises(ValueError, match="needs a LoRA adapter"):
        DPOModule(tiny_model(llm=True), reference="adapter_off")
    with pytest.raises(ValueError, match="unknown reference 'base'"):
        DPOModule(tiny_model(), reference="base")
