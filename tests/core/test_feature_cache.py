"""Feature cache: `vidtempo cache` fills it, training batches read it, the loss equals the loss from pixels,
and a changed video or encoder never reuses a stale entry."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vidtempo.cli.main import main
from vidtempo.config.load import load_recipe
from vidtempo.data.collate import VideoCollator
from vidtempo.data.datasets import ConversationDataset
from vidtempo.data.feature_cache import FeatureCache, encoder_fingerprint
from vidtempo.models.build import build_video_llm

ROOT = Path(__file__).resolve().parents[2]


def write_recipe(video_dir: Path, tmp_path: Path) -> Path:
    recipe = tmp_path / "cached.yaml"
    recipe.write_text(
        f"_base_: {ROOT / 'recipes/tiny/sft_pool.yaml'}\n"
        f"model: {{trainable: {{vision_encoder: false, compressor: true, projector: true, llm: true}}}}\n"
        f"data:\n  train: {{_target_: conversation, path: {video_dir / 'train.jsonl'}, video_root: {video_dir}}}\n"
        f"  val: null\n  collator: {{feature_cache: {tmp_path / 'cache'}}}\n"
        "trainer: {max_steps: 2, val_check_interval: null}\n"
    )
    return recipe


def test_cache_fill_then_same_loss_as_pixels_and_stale_entries_recomputed(video_dir, tmp_path, capsys, tokenizer):
    recipe = write_recipe(video_dir, tmp_path)
    assert main(["cache", str(recipe)]) == 0
    assert "4 computed, 0 reused" in capsys.readouterr().out
    assert main(["cache", str(recipe)]) == 0
    assert "0 computed, 4 reused" in capsys.readouterr().out

    cfg = load_recipe(recipe)
    torch.manual_seed(0)
    model = build_video_llm(cfg.model).eval()
    samples = ConversationDataset(video_dir / "train.jsonl", video_root=video_dir).samples
    settings = {"num_frames": 8, "frame_size": 32}
    pixels = VideoCollator(tokenizer, **settings)(samples)
    cached = VideoCollator(tokenizer, **settings, feature_cache=str(tmp_path / "cache"),
                           encoder_id=encoder_fingerprint(model.vision_encoder))(samples)
    assert cached.frames is None and cached.features is not None and cached.features.shape[:2] == (4, 8)
    with torch.no_grad():
        loss_pixels = model(**pixels.model_inputs()).loss
        loss_cached = model(**cached.model_inputs()).loss
    torch.testing.assert_close(loss_cached, loss_pixels)

    # a touched video gets a new key: its stale entry is not reused, the batch falls back to pixels
    video = str(video_dir / "v0.mp4")
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = VideoCollator(tokenizer, **settings, feature_cache=str(tmp_path / "cache"),
                          encoder_id=encoder_fingerprint(model.vision_encoder))(samples)
    assert again.features is None and again.frames is not None
    assert main(["cache", str(recipe)]) == 0
    assert "1 computed, 3 reused" in capsys.readouterr().out
    # another encoder (different weights) has other keys
    other = build_video_llm(cfg.model).vision_encoder
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    cache = FeatureCache(tmp_path / "cache")
    collate = VideoCollator(tokenizer, **settings, feature_cache=str(tmp_path / "cache"),
                            encoder_id=encoder_fingerprint(other))
    assert cache.get(collate.cache_key(samples[1])) is None


def test_training_reads_the_cache(video_dir, tmp_path, monkeypatch):
    recipe = write_recipe(video_dir, tmp_path)
    assert main(["cache", str(recipe)]) == 0

    def no_decoding(self, sample):
        raise AssertionError("training decoded pixels although every clip is cached")

    monkeypatch.setattr(VideoCollator, "_decode", no_decoding)
    assert main(["train", str(recipe), f"output_dir={tmp_path / 'run'}"]) == 0
    assert (tmp_path / "run" / "0_sft" / "final" / "model.safetensors").is_file()
    bad = load_recipe(recipe, ["model.trainable.vision_encoder=true", f"output_dir={tmp_path / 'run2'}"])
    from vidtempo.config.errors import RecipeError
    from vidtempo.training.run import train

    try:
        train(bad)
    except RecipeError as err:
        assert "frozen vision encoder" in str(err)
    else:
        raise AssertionError("a trainable encoder with a feature cache must be refused")
