"""The native Qwen2.5-VL backbone behind the VideoLLM contract: processor-equivalent patches, token counts,
MRoPE time from timestamps, generate vs forward, trainable parts / LoRA scopes, checkpoints, SFT and DPO runs
through `vidtempo.training.run.train`, and the offline 7B parameter count."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vidtempo.data.chat import IGNORE_INDEX
from vidtempo.data.collate import VideoCollator
from vidtempo.data.samples import ConversationSample
from vidtempo.models.native.qwen2_5_vl import (
    Qwen25VLVideoModel,
    patchify_video,
    smart_resize,
    tiny_qwen2_5_vl,
    tiny_qwen2_5_vl_tokenizer,
)
from vidtempo.models.video_llm import TrainableParts

REPO = Path(__file__).resolve().parents[2]
TINY_RECIPE = REPO / "recipes" / "tiny" / "tempo_qwen25vl.yaml"
RECIPE_7B = REPO / "recipes" / "tempo_qwen2_5_vl_7b.yaml"
COLLATE = {"num_frames": 4, "frame_size": 56}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


@pytest.fixture(scope="module")
def qtok():
    return tiny_qwen2_5_vl_tokenizer()


def tiny_model(**kw) -> Qwen25VLVideoModel:
    torch.manual_seed(0)
    kw.setdefault("min_pixels", 784)
    return Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), **kw)


def batch_of(qtok, video_dir: Path, n: int = 2, **collate):
    convs = [
        ConversationSample(video=str(video_dir / f"v{i}.mp4"), messages=[
            {"role": "user", "content": "<video>\nWhen is the beep?" + " Answer in seconds." * i},
            {"role": "assistant", "content": f"{i + 1}.0 - {i + 2}.0 seconds"},
        ])
        for i in range(n)
    ]  # fmt: skip
    return VideoCollator(qtok, **{**COLLATE, **collate})(convs)


def test_tokenizer_ids_match_the_tiny_config(qtok):
    cfg = tiny_qwen2_5_vl().config
    ids = qtok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    assert ids == [cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.image_token_id, cfg.video_token_id]
    assert len(qtok) <= cfg.text_config.vocab_size and qtok.eos_token_id == cfg.text_config.eos_token_id


def test_patches_equal_the_hf_video_processor():
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    video = (torch.rand(5, 3, 56, 84) * 255).round().to(torch.uint8)  # odd T: the last frame is repeated
    ref = Qwen2VLVideoProcessor(min_pixels=784, max_pixels=10**7, cap_pixels_per_frame=False)(
        videos=[video], return_tensors="pt", do_sample_frames=False
    )
    ours = tiny_model().video_patches(video.float() / 255, torch.arange(5.0))
    assert list(ref["video_grid_thw"][0]) == list(ours.grid) == [3, 4, 6]
    torch.testing.assert_close(ours.patches, ref["pixel_values_videos"], atol=1e-5, rtol=0)
    assert ours.num_tokens == 3 * 2 * 3


def test_smart_resize_and_patchify_shapes():
    assert smart_resize(56, 84, min_pixels=784, max_pixels=10**6) == (56, 84)
    assert smart_resize(30, 30, min_pixels=784, max_pixels=10**6) == (28, 28)
    h, w = smart_resize(448, 784, min_pixels=3136, max_pixels=30000)
    assert h % 28 == w % 28 == 0 and h * w <= 30000
    with pytest.raises(ValueError, match="multiples of 28"):
        patchify_video(torch.zeros(2, 3, 42, 56))


def test_forward_backward_token_count_and_aligned_labels(qtok, video_dir):
    model = tiny_model(trainable={"vision_encoder": True, "projector": True, "llm": True})
    batch = batch_of(qtok, video_dir)
    out = model(**batch.model_inputs())
    t, size = batch.frames.shape[1], batch.frames.shape[-1]
    expected = t // 2 * (size // 28) * (size // 28)  # merged tokens: T/2 * H/28 * W/28
    assert out.num_video_tokens.tolist() == [expected, expected]
    assert out.logits.shape[:2] == out.labels.shape == out.attention_mask.shape
    for i in range(2):  # answer labels survive in order; every video position (+ start/end) is ignored
        kept = batch.labels[i][batch.labels[i] != IGNORE_INDEX]
        assert torch.equal(out.labels[i][out.labels[i] != IGNORE_INDEX], kept)
        assert out.attention_mask[i].sum() == batch.attention_mask[i].sum() - 1 + expected + 2
    out.loss.backward()
    for part in ("visual.blocks.0", "visual.merger", "language_model.layers.0", "lm_head"):
        grads = [p.grad for n, p in model.named_parameters() if part in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), part


def test_generate_returns_new_ids_consistent_with_forward(qtok, video_dir):
    model = tiny_model().eval()
    batch = batch_of(qtok, video_dir, generation=True)  # rows of different lengths: left padding + MRoPE
    new = model.generate(**batch.model_inputs(with_labels=False), max_new_tokens=3)
    assert new.shape == (2, 3)
    out = model(**batch.model_inputs(with_labels=False))
    last = out.attention_mask.sum(1) - 1
    greedy = out.logits[torch.arange(2), last].argmax(-1)
    assert torch.equal(new[:, 0], greedy)


def test_timestamps_drive_the_mrope_time_axis(qtok, video_dir):
    model = tiny_model().eval()
    batch = batch_of(qtok, video_dir, n=1)
    args = batch.model_inputs(with_labels=False)
    fast_video = replace(args["video"], timestamps=torch.arange(4.0)[None])
    slow_video = replace(args["video"], timestamps=3.0 * torch.arange(4.0)[None])
    one_fps = model.prepare_inputs(args["input_ids"], args["attention_mask"], None, fast_video)
    slow = model.prepare_inputs(args["input_ids"], args["attention_mask"], None, slow_video)
    assert one_fps["second_per_grid_ts"].tolist() == [2.0] and slow["second_per_grid_ts"].tolist() == [6.0]
    video = one_fps["input_ids"][0] == model.hf.config.video_token_id
    t_fast, t_slow = one_fps["position_ids"][0, 0, video], slow["position_ids"][0, 0, video]
    # tokens_per_second = 2: the second temporal patch sits 2 s * 2 = 4 (resp. 12) positions after the first
    assert (t_fast.max() - t_fast.min()).item() == 4 and (t_slow.max() - t_slow.min()).item() == 12
    assert torch.equal(one_fps["position_ids"][1:], slow["position_ids"][1:])  # height / width axes unchanged
    with torch.no_grad():
        a = model(**{**args, "video": fast_video}).logits
        b = model(**{**args, "video": slow_video}).logits
    assert not torch.allclose(a, b)


def test_trainable_parts_and_lora_scopes():
    model = tiny_model(trainable={"vision_encoder": False, "projector": True, "llm": False})
    counts = model.parameter_counts()
    assert counts["compressor"] == (0, 0) and counts["projector"][0] == counts["projector"][1] > 0
    assert counts["vision_encoder"][1] == counts["llm"][1] == 0 and not model.has_lora
    model.set_trainable(TrainableParts(vision_encoder=False, compressor=False, projector=False, llm="lora"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    with pytest.raises(ValueError, match="lora_vit"):
        model.set_trainable(TrainableParts(vision_encoder="lora", llm="lora"))
    vit = tiny_model(
        lora=LORA,
        lora_vit={**LORA, "alpha": 4},
        trainable={"vision_encoder": "lora", "projector": False, "llm": "lora"},
    )
    names = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert any("visual.blocks" in n for n in names) and any("language_model" in n for n in names)
    assert not any("merger" in n for n in names) and all("lora_" in n for n in names)
    llm_only = tiny_model(lora=LORA, lora_vit=LORA, trainable={"projector": False, "llm": "lora"})
    with pytest.raises(ValueError, match="merge it first"):
        llm_only.set_trainable(TrainableParts(vision_encoder="lora", llm="lora"))
    llm_only.merge_lora()
    llm_only.set_trainable(TrainableParts(vision_encoder="lora", llm="lora"))  # fresh adapter after a merge
    assert llm_only.base_modified and any(
        "visual.blocks" in n and "lora_" in n for n, _ in llm_only.named_parameters()
    )


def test_checkpoint_round_trip_and_backbone_weights(qtok, video_dir, tmp_path):
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import load_pretrained, save_pretrained

    node = {"_target_": "vidtempo.models.native.qwen2_5_vl.Qwen25VLVideoModel",
            "llm": {"_target_": "vidtempo.models.native.qwen2_5_vl.tiny_qwen2_5_vl"},
            "trainable": {"llm": "lora"}, "lora": LORA, "min_pixels": 784}  # fmt: skip
    torch.manual_seed(0)
    model = build_video_llm(node).eval()
    with torch.no_grad():  # a non-zero adapter, so the round trip is not trivially the base model
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    batch = batch_of(qtok, video_dir)
    save_pretrained(model, tmp_path / "ckpt", model_config=node, tokenizer=qtok)
    loaded, tok, _ = load_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch.model_inputs()).logits, model(**batch.model_inputs()).logits,
                                   rtol=0, atol=0)  # fmt: skip
    assert tok.convert_tokens_to_ids("<|video_pad|>") == 516 and (tmp_path / "ckpt" / "adapter").is_dir()
    # the backbone's own load_pretrained reads a Hugging Face save_pretrained directory
    hf_dir = tmp_path / "hf"
    tiny_model().hf.save_pretrained(hf_dir)
    fresh = tiny_qwen2_5_vl()
    fresh.load_pretrained(hf_dir)
    ref = tiny_model().hf.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in fresh.model.state_dict().items())


def _metrics(stage_dir: Path) -> list[dict[str, str]]:
    with open(stage_dir / "logs" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def _train(tmp_path: Path, *overrides: str) -> Path:
    from vidtempo.config.load import load_recipe
    from vidtempo.training.run import train

    base = [f"output_dir={tmp_path}", "data.val=null", "data.batch_size=2", "data.collator.num_frames=4",
            "trainer.log_every_n_steps=1", "trainer.val_check_interval=null", "checkpoint.every_n_steps=0"]  # fmt: skip
    return train(load_recipe(TINY_RECIPE, [*base, *overrides]))


def test_sft_run_on_the_tiny_recipe_lowers_the_loss(video_dir, tmp_path):
    train_node = json.dumps({"_target_": "conversation", "path": str(video_dir / "train.jsonl"),
                             "video_root": str(video_dir)})  # fmt: skip
    final = _train(tmp_path, f"data.train={train_node}", "trainer.max_steps=8", "optim.lr=3e-3",
                   "+data.shuffle=false")  # fmt: skip
    losses = [float(r["train/loss"]) for r in _metrics(final.parent)]
    assert len(losses) == 8 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-2:]) < sum(losses[:2]) - 0.5, losses
    assert (final / "model.safetensors").is_file() and (final / "tokenizer_config.json").is_file()


def test_dpo_run_with_lora_trains_only_adapters(video_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"video": f"v{i}.mp4", "prompt": "<video>\nDescribe the video in order.",
             "chosen": "red circle then blue square", "rejected": "blue square then red circle",
             "magnitude": 16} for i in range(4)]  # fmt: skip
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_node = json.dumps({"_target_": "preference", "path": str(pairs), "video_root": str(video_dir)})
    final = _train(tmp_path, f"data.train={train_node}", "trainer.max_steps=3", "optim.lr=1e-2",
                   "objective={_target_: dpo, beta: 0.1, rpo_alpha: 1.0, reference: auto}",
                   "model.trainable={vision_encoder: false, projector: false, llm: lora}")  # fmt: skip
    rows = _metrics(final.parent)
    assert len(rows) == 3
    # the fresh adapter starts at zero, so at step 0 the policy equals its adapter-off reference: loss log 2
    assert abs(float(rows[0]["train/loss/preference"]) - 0.6931) < 1e-3
    from safetensors.torch import load_file

    from vidtempo.models.checkpoint import load_pretrained

    saved = load_file(str(final / "model.safetensors"))
    model, tok, _ = load_pretrained(final)
    torch.manual_seed(0)  # run.train built the model after seed_everything(0): rebuild the same start
    start = _initial_weights()
    changed = {k for k, v in saved.items() if k in start and not torch.equal(v, start[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k and saved[k].abs().sum() > 0 for k in saved)
    batch = batch_of(tok, video_dir, generation=True)
    assert model.eval().generate(**batch.model_inputs(with_labels=False), max_new_tokens=2).shape == (2, 2)


def _initial_weights() -> dict[str, torch.Tensor]:
    import lightning as L

    from vidtempo.models.build import build_video_llm

    L.seed_everything(0, workers=True)
    tiny_qwen2_5_vl_tokenizer()  # same construction order as run.train: tokenizer, then model
    node = {"_target_": "vidtempo.models.native.qwen2_5_vl.Qwen25VLVideoModel",
            "llm": {"_target_": "vidtempo.models.native.qwen2_5_vl.tiny_qwen2_5_vl"},
            "trainable": {"vision_encoder": False, "projector": False, "llm": "lora"},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
            "min_pixels": 784, "max_pixels": 3136, "max_length": 1024}  # fmt: skip
    return {k: v.clone() for k, v in build_video_llm(node).state_dict().items()}


def test_inspect_counts_the_7b_offline():
    from vidtempo.cli.inspect import inspect_recipe
    from vidtempo.config.load import load_recipe

    report = inspect_recipe(load_recipe(RECIPE_7B))
    counts = report["stages"]["sft"]
    total = sum(c[0] for c in counts.values()) - sum(c[1] for c in counts.values())  # minus the LoRA adapter
    assert 8.28e9 < total < 8.30e9, total  # Qwen2.5-VL-7B-Instruct: 8.29 B
    assert counts["vision_encoder"][1] > 0 and counts["projector"][1] == 0  # SFT: ViT LoRA, merger frozen
    frames, tokens = report["tokens"][600.0]
    assert frames == 600 and tokens < 16384  # the 9e6-pixel clip budget keeps 10 min inside max_length
