"""Self-captioning plumbing (model.generate, clip bounds, prompts) and the end-to-end CLI on a tiny model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from vidtempo.prefgen.captions import CaptionSettings, SelfCaptioner, postprocess_caption

NODE = {"_target_": "vidtempo.models.VideoLLM",
        "vision_encoder": {"_target_": "siglip", "config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8}},
        "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}  # fmt: skip
COLLATOR = {"num_frames": 4, "frame_size": 32}


@pytest.fixture(scope="module")
def tiny(tokenizer):
    from vidtempo.models.build import build_video_llm

    torch.manual_seed(0)
    return build_video_llm(NODE).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny, tokenizer) -> Path:
    from vidtempo.models.checkpoint import save_pretrained

    out = tmp_path_factory.mktemp("ckpt")
    save_pretrained(tiny, out, model_config=NODE, tokenizer=tokenizer)
    return out


def fake_generate(tokenizer, seen):
    """A generate that answers with each row's first frame time (or its prompt's last caption line)."""

    def generate(*, input_ids, video=None, **kwargs):
        frames, timestamps = (None, None) if video is None else (video.frames, video.timestamps)
        prompts = tokenizer.batch_decode(input_ids.clamp(min=0), skip_special_tokens=True)
        shape = None if frames is None else tuple(frames.shape)
        seen.append({"prompts": prompts, "frames": shape, "kwargs": kwargs})
        rows = []
        for b in range(input_ids.shape[0]):
            if timestamps is not None:
                text = f"Thinking.\nCaption: clip at {float(timestamps[b, 0]):.2f}"
            else:
                text = f"story of {seen[-1]['prompts'][b].count('- Caption')} captions"
            rows.append(torch.tensor(tokenizer.encode(text, add_special_tokens=False)))
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)

    return generate


def test_captions_come_from_generate_with_clip_bounds(videos, tiny, tokenizer, monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(tiny, "generate", fake_generate(tokenizer, seen))
    captioner = SelfCaptioner(tiny, tokenizer, COLLATOR, CaptionSettings(caption_max_new_tokens=7))
    caps = captioner.caption_clips(str(videos["good"]), [(0.0, 2.0), (2.0, 4.0), (8.0, 10.0)])
    # 2 frames per clip (TEMPLE's keyframe count), uniform: the first at start + 0.5 s for a 2 s clip
    assert caps == ["clip at 0.50", "clip at 2.50", "clip at 8.50"]
    assert [s["frames"][1] for s in seen] == [2, 2, 2]
    assert seen[0]["kwargs"]["max_new_tokens"] == 7 and seen[0]["kwargs"]["do_sample"] is False
    assert "earlier clip" not in seen[0]["prompts"][0] and "clip at 0.50" in seen[1]["prompts"][0]

    seen.clear()
    texts = captioner.describe([["a", "b", "c"], ["c", "a"]])
    assert texts == ["story of 3 captions", "story of 2 captions"] and seen[0]["frames"] is None
    assert seen[0]["kwargs"]["temperature"] == 0.7 and seen[0]["kwargs"]["repetition_penalty"] == 1.05
    assert seen[0]["prompts"][1].index("Caption 1: c") < seen[0]["prompts"][1].index("Caption 2: a")


def test_no_context_captions_in_one_batch(videos, tiny, tokenizer, monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(tiny, "generate", fake_generate(tokenizer, seen))
    settings = CaptionSettings(caption_context="none", frames_per_clip=None)
    caps = SelfCaptioner(tiny, tokenizer, COLLATOR, settings).caption_clips(
        str(videos["good"]), [(0, 2), (4, 6)]
    )
    assert len(seen) == 1 and seen[0]["frames"][:2] == (2, 4)  # the recipe's 4 frames per clip
    assert caps == ["clip at 0.25", "clip at 4.25"]


def test_postprocess_caption():
    assert postprocess_caption('Some analysis.\n\n**Detailed caption:** "A cat jumps."') == "A cat jumps."
    assert postprocess_caption("  plain text  ") == "plain text"
    assert postprocess_caption("") == ""


def test_real_tiny_model_captions(videos, tiny, tokenizer):
    captioner = SelfCaptioner(
        tiny, tokenizer, COLLATOR, CaptionSettings(caption_max_new_tokens=5, max_new_tokens=6)
    )
    caps = captioner.caption_clips(str(videos["good"]), [(0.0, 2.0), (2.0, 4.0)])
    assert len(caps) == 2 and all(isinstance(c, str) for c in caps)
    torch.manual_seed(0)
    (text,) = captioner.describe([caps])
    assert isinstance(text, str) and len(tokenizer.encode(text, add_special_tokens=False)) <= 6 + 2


def test_cli_end_to_end(videos, checkpoint, tmp_path):
    from vidtempo.cli import prefgen as cli
    from vidtempo.data.datasets import PreferenceDataset
    from vidtempo.training.curriculum import MagnitudeFilter

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  collator: {num_frames: 4, frame_size: 32}\n"
        "prefgen: {caption_max_new_tokens: 4, max_new_tokens: 6, magnitudes: [4, 2],"
        " perturbations: [reverse], pair_filters: false, video_size: 32}\n"
    )
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "pairs.jsonl"
    argv = [str(recipe), "--checkpoint", str(checkpoint), "--videos", str(videos["good"]), str(videos["few"]),
            "--out", str(out), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert cli.run(parser.parse_args(argv)) == 0
    ds = PreferenceDataset(out)
    assert len(ds) == 4  # reverse x 2 magnitudes x 2 domains
    assert len(MagnitudeFilter(ds, [2])) == 2
    status = [json.loads(x) for x in (tmp_path / "pairs.status.jsonl").read_text().splitlines()]
    assert len(status[1]["captions"]) == 5 and status[2]["status"] == "rejected"
    assert cli.run(parser.parse_args(argv)) == 0  # resumed: nothing left to do
    assert len(PreferenceDataset(out)) == 4
    from vidtempo.cli.main import UserError

    changed = parser.parse_args([str(recipe), "+prefgen.seed=3", *argv[1:]])
    with pytest.raises(UserError, match="other settings"):  # resuming with other settings is refused
        cli.run(changed)
