"""benchmarks/synth_probe.py: the oracle features are the event script, and a short run completes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from vidtempo.synth.generate import Manifest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes" / "tiny" / "synth_grounding.yaml")


def _probe():
    spec = importlib.util.spec_from_file_location("synth_probe", ROOT / "benchmarks" / "synth_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_features_mark_exactly_the_visible_objects(small_set: Manifest, tokenizer) -> None:
    probe = _probe()
    from vidtempo.synth.dataset import SynthConversations

    col = probe.make_collator(tokenizer, {"num_frames": 8, "frame_size": 32}, None, False)
    clips = probe.Clips(col, small_set, oracle_dim=16)
    sample = SynthConversations(str(small_set.root), "train", tasks=["grounding"]).samples[0]
    clips.prefetch([sample])
    video = clips(sample)  # (T, 1, 16)
    script = small_set.scripts()[Path(sample.video).stem]
    assert video.frames.shape == (8, 1, 16)
    for k, t in enumerate(video.timestamps.tolist()):
        hot = {clips.names[i] for i in torch.nonzero(video.frames[k, 0]).flatten().tolist()}
        assert hot == {o.name for o in script.visible_objects(t)}
    assert video.frames.sum() > 0


def test_a_short_probe_run_scores_all_conditions(small_set: Manifest) -> None:
    record = _probe().main([
        "--root", str(small_set.root), "--recipe", RECIPE, "--features", "oracle", "--multi-turn",
        "--steps", "3", "--batch-size", "2", "--eval-n", "3", "--answers", "percent", "--time", "relative", "--template", "plain",
    ])  # fmt: skip
    assert record["steps"] == 3 and len(record["loss_curve"]) == 2
    assert set(record["scores"]) == {"normal", "time", "blind"}
    assert all(r["n"] == 3 and 0.0 <= r["mIoU"] <= 1.0 for r in record["scores"].values())


def test_answer_formats_rewrite_only_the_answers_and_map_back() -> None:
    from vidtempo.data.samples import ConversationSample

    probe = _probe()
    q = "<video>\nWhen is the red circle visible?"
    sample = ConversationSample("v.mp4", [{"role": "user", "content": q},
                                          {"role": "assistant", "content": "1.6 - 13.5 seconds"}],
                                meta={"duration": 20.0})  # fmt: skip
    whole = probe.rewrite_answers(sample, "whole_seconds")
    assert [m["content"] for m in whole.messages] == [q, "02 - 14 seconds"]
    percent = probe.rewrite_answers(sample, "percent")
    assert percent.messages[1]["content"] == "08 - 68"  # 1.6 / 20 s, 13.5 / 20 s
    assert probe.from_answer_units((8.0, 68.0), "percent", 20.0) == (1.6, 13.6)
    assert probe.rewrite_answers(sample, "as_is") is sample
    assert sample.messages[1]["content"] == "1.6 - 13.5 seconds"  # the input is not modified


def test_a_short_probe_run_with_the_saliency_loss(small_set: Manifest) -> None:
    record = _probe().main([
        "--root", str(small_set.root), "--recipe", RECIPE, "--features", "pixels", "--saliency-weight", "1.0",
        "--steps", "2", "--batch-size", "2", "--eval-n", "2", "+data.collator.video_position=after_text",
    ])  # fmt: skip
    assert record["steps"] == 2 and record["saliency_weight"] == 1.0
