"""``vidtempo prefgen`` on the native Qwen2.5-VL backbone: a saved tiny checkpoint captions its own clips,
pairs are built in both domains, and they load as preference data that DPO on the same model consumes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from vidtempo.models.native.qwen2_5_vl import tiny_qwen2_5_vl_tokenizer

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
NODE = {"_target_": "vidtempo.models.native.qwen2_5_vl.Qwen25VLVideoModel",
        "llm": {"_target_": "vidtempo.models.native.qwen2_5_vl.tiny_qwen2_5_vl"},
        "trainable": {"vision_encoder": False, "projector": False, "llm": "lora"}, "lora": LORA,
        "min_pixels": 784, "max_pixels": 3136, "max_length": 1024}  # fmt: skip
COLLATOR = {"num_frames": 4, "frame_size": 56}
PERTURBATIONS, MAGNITUDES = ["drop", "reverse"], [4, 2]


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> tuple[torch.nn.Module, object, Path]:
    """(model, tokenizer, checkpoint dir) of a tiny random Qwen2.5-VL with a LoRA adapter on its LLM."""
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    torch.manual_seed(0)
    tok = tiny_qwen2_5_vl_tokenizer()
    model = build_video_llm(NODE).eval()
    out = tmp_path_factory.mktemp("qwen25vl_ckpt")
    save_pretrained(model, out, model_config=NODE, tokenizer=tok)
    return model, tok, out


@pytest.fixture(scope="module")
def generated(native, videos, tmp_path_factory) -> tuple[Path, list[dict]]:
    """Run the prefgen CLI on the checkpoint: (pairs file, status rows)."""
    from vidtempo.cli import prefgen as cli

    _, _, ckpt = native
    root = tmp_path_factory.mktemp("native_prefgen")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"data:\n  collator: {json.dumps(COLLATOR)}\n"
        f"prefgen: {{caption_max_new_tokens: 5, max_new_tokens: 8, perturbations: {PERTURBATIONS}, "
        f"magnitudes: {MAGNITUDES}, video_size: 32}}\n"
    )
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = root / "pairs.jsonl"
    argv = [str(recipe), "--checkpoint", str(ckpt), "--videos", str(videos["good"]), str(videos["few"]),
            "--out", str(out), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert cli.run(parser.parse_args(argv)) == 0
    status = [json.loads(x) for x in (root / "pairs.status.jsonl").read_text().splitlines()]
    return out, status


def test_prefgen_selects_and_captions_with_the_native_checkpoint(native, generated, videos):
    from vidtempo.prefgen.captions import CaptionSettings, SelfCaptioner
    from vidtempo.prefgen.select import SelectSettings, select_video

    model, tok, _ = native
    _, status = generated
    kept, few = status[1], status[2]
    assert kept["status"] == "kept" and few["status"] == "rejected" and "too few clips" in few["reason"]
    sel = select_video(videos["good"], SelectSettings())
    assert len(kept["captions"]) == len(sel.segments) == 5
    # the captions are the reloaded checkpoint's own greedy generations: the in-memory model gives the same
    settings = CaptionSettings(caption_max_new_tokens=5, max_new_tokens=8)
    again = SelfCaptioner(model, tok, COLLATOR, settings).caption_clips(str(videos["good"]), sel.segment_times())
    assert again == kept["captions"]


def test_native_pairs_load_and_feed_dpo(native, generated):
    from vidtempo.data.datasets import PreferenceDataset
    from vidtempo.data.preference_collate import PreferenceCollator
    from vidtempo.training.curriculum import MagnitudeFilter
    from vidtempo.training.dpo import DPOModule

    model, tok, _ = native
    out, status = generated
    ds = PreferenceDataset(out)
    video_side = [s for s in ds.samples if s.meta["domain"] == "video"]
    caption_side = [s for s in ds.samples if s.meta["domain"] == "caption"]
    filtered = sum(v for k, v in status[1]["stats"].items() if k.startswith("filtered_"))
    # 5 segments: every drop / reverse at 4 and 2 changes the order, so each gives a video-domain pair
    assert len(video_side) == len(PERTURBATIONS) * len(MAGNITUDES) == len(caption_side) + filtered
    assert all(Path(s.rejected_video).is_file() and s.chosen == s.rejected for s in video_side)
    assert len(MagnitudeFilter(ds, [2])) >= len(PERTURBATIONS)  # a curriculum level: one video pair per kind
    # the pairs feed DPO on the same native model: with its LoRA adapter at zero, policy == reference
    batch = PreferenceCollator(tok, **COLLATOR)([*video_side[:2], *caption_side[:1]])
    assert len(batch) == len(video_side[:2]) + len(caption_side[:1]) and not batch.skipped
    assert batch.input_side.tolist()[:2] == [True, True]
    with torch.no_grad():
        step = DPOModule(model, reference="adapter_off", beta=0.1, rpo_alpha=1.0)(batch)
    assert abs(float(step.loss.preference_loss) - 0.6931) < 1e-3
    assert torch.isfinite(step.loss.loss) and torch.all(step.policy_chosen_logps < 0)


def test_encoder_grouping_uses_the_native_vision_tower(native, videos):
    """``group_features: encoder`` embeds clips with the Qwen2.5-VL ViT + merger (its ``vision_encoder``
    is only a shape view, so the composed-model path cannot be used)."""
    from vidtempo.data.video import load_clip
    from vidtempo.prefgen.select import SelectSettings, encoder_embedder, select_video

    model, _, _ = native
    frames = load_clip(videos["good"], num_frames=5).frames.numpy()  # (5, H, W, 3) uint8, one per shot
    embed = encoder_embedder(model)
    first, second = embed(frames), embed(frames[::-1].copy())
    assert first.shape == (5, model.hf.config.vision_config.out_hidden_size) and torch.isfinite(first).all()
    torch.testing.assert_close(second, first.flip(0), rtol=0, atol=1e-5)  # per frame, deterministic
    assert not torch.allclose(first[0], first[1])  # different shots, different embeddings
    sel = select_video(videos["good"], SelectSettings(group_features="encoder"), embed)
    assert len(sel.clips) == 5 and sum(len(g) for g in sel.groups) == 5
