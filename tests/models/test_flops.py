"""The FLOP model (``vidtempo.models.flops``) against ``torch.utils.flop_counter.FlopCounterMode`` on tiny real
models: forward, and a training step with (a) every part trained, (b) frozen towers + LoRA LLM.

Apples to apples: FlopCounterMode counts matmuls, convolutions and fused attention kernels; the FLOP model
counts the same products (norms, activations, softmax are left out by both). CPU sdpa runs a kernel the
counter has no formula for, so attention runs on the math backend (plain matmuls); the model is in train
mode even for the forward, since ``nn.TransformerEncoder``'s eval fast path is one fused op the counter does
not see either.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vidtempo.models.build import build_video_llm
from vidtempo.models.flops import model_flops
from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX, TrainableParts, VideoInputs
from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl

FRAMES, TEXT = 8, 24
QUERY = "when is the red circle visible?"
PLANS = {
    "all": {"vision_encoder": True, "compressor": True, "projector": True, "llm": True},
    "lora": {"vision_encoder": False, "compressor": True, "projector": True, "llm": "lora"},
}


def _video_llm(compressor: dict, projector: dict | None = None):
    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "compressor": compressor, "llm": {"_target_": "tiny"}}  # fmt: skip
    if projector is not None:
        node["projector"] = projector
    return build_video_llm(node)


def _pool():
    return _video_llm({"_target_": "pool", "in_dim": 32, "temporal_layers": 1, "temporal_heads": 2})


def _tdc():
    comp = {
        "_target_": "tdc",
        "in_dim": 32,
        "llm_dim": 64,
        "qformer": "tiny",
        "max_segments": 0,
        "chunk_size": 4,
    }
    return _video_llm(comp, {"_target_": "identity", "dim": 64})


def _native():
    return Qwen25VLVideoModel(
        llm=tiny_qwen2_5_vl(), lora={"r": 4, "alpha": 8, "target_modules": "all-linear"}
    )


MODELS = {"pool": (_pool, 32), "tdc": (_tdc, 32), "qwen2_5_vl": (_native, 56)}


def _counted(model, size: int, train: bool) -> int:
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (1, TEXT + 1))
    ids[0, 3] = VIDEO_TOKEN_INDEX
    video = VideoInputs(frames=torch.rand(1, FRAMES, 3, size, size), timestamps=torch.arange(FRAMES)[None] + 0.5,
                        queries=[QUERY])  # fmt: skip
    model.train(True)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        if train:
            model(ids, torch.ones_like(ids), labels=ids.clamp(min=0), video=video).loss.backward()
        else:
            with torch.no_grad():
                model(ids, torch.ones_like(ids), video=video)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _predicted(model, size: int):
    tokenizer = getattr(model, "compressor", None) and getattr(model.compressor, "tokenizer", None)
    query = len(tokenizer(QUERY)["input_ids"]) if tokenizer is not None else 0
    return model_flops(model, FRAMES, TEXT, frame_size=size, query_tokens=query)


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_and_training_flops_match_flop_counter(name):
    build, size = MODELS[name]
    model = build()
    ratios = {"forward": _predicted(model, size).forward / _counted(model, size, train=False)}
    for plan, parts in PLANS.items():
        model.set_trainable(TrainableParts(**parts))
        ratios[plan] = _predicted(model, size).train / _counted(model, size, train=True)
    print(name, {k: round(v, 4) for k, v in ratios.items()})
    assert all(abs(r - 1) < 0.05 for r in ratios.values()), ratios


def test_frozen_towers_have_no_backward_and_lora_skips_weight_gradients():
    model = _pool()
    model.set_trainable(TrainableParts(**PLANS["lora"]))
    lora = model_flops(model, FRAMES, TEXT)
    model.set_trainable(TrainableParts(**{**PLANS["lora"], "llm": False}))
    frozen = model_flops(model, FRAMES, TEXT)
    model.set_trainable(TrainableParts(**PLANS["all"]))
    full = model_flops(model, FRAMES, TEXT)
    assert lora.parts["vision_encoder"].backward == 0 and full.parts["vision_encoder"].backward > 0
    # a frozen LLM behind a trained projector still back-propagates activations (1x its forward, 2x attention)
    assert frozen.parts["llm"].forward < frozen.parts["llm"].backward < 1.3 * frozen.parts["llm"].forward
    # ... a fully trained one adds weight gradients (2x); LoRA only its adapters' on top of 1x
    assert full.parts["llm"].backward == pytest.approx(2 * full.parts["llm"].forward, rel=0.01)
    assert frozen.parts["llm"].backward < lora.parts["llm"].backward < 1.2 * frozen.parts["llm"].backward


def test_attention_term_is_quadratic_and_cached_features_skip_the_tower():
    model = _pool()
    llm = model.llm.config  # tiny: 2 layers, 4 heads x 16 = 64 wide
    length = 100
    one, two = (model_flops(model, 0, n).parts["llm"].forward for n in (length, 2 * length))
    # linear terms cancel in f(2L) - 2 f(L); the attention products (Q K^T, P V) leave 2 x layers x 4 x W x L^2
    width = llm.num_attention_heads * (llm.hidden_size // llm.num_attention_heads)
    assert two - 2 * one == 2 * llm.num_hidden_layers * 4 * width * length**2
    assert model_flops(model, 64, TEXT).video_tokens == 16 * model_flops(model, 4, TEXT).video_tokens
    assert model_flops(model, 8, TEXT, cached_features=True).parts["vision_encoder"].forward == 0


def test_inspect_reports_flops_per_part_per_stage(capsys):
    from pathlib import Path

    from vidtempo.cli.inspect import inspect_recipe
    from vidtempo.cli.main import main
    from vidtempo.config.load import load_recipe

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"
    report = inspect_recipe(load_recipe(recipe), text_tokens=64)
    flops = report["flops"]["sft"][30.0]
    assert flops.llm_tokens == 64 + report["tokens"][30.0][1] and flops.train > flops.forward > 0
    assert not flops.unmodelled and set(flops.parts) == set(report["stages"]["sft"])
    assert main(["inspect", str(recipe), "--text-tokens", "64"]) == 0
    assert "FLOP per sample, stage 'sft'" in capsys.readouterr().out


def _towers():
    from vidtempo.models.encoders.cnn import FrameCNN
    from vidtempo.models.encoders.hf_vision import ClipEncoder, Dinov2Encoder
    from vidtempo.models.encoders.mel_cnn import MelCNN
    from vidtempo.models.encoders.presets import tiny_audio_encoder, tiny_vision_encoder

    vit = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    return {
        "siglip": tiny_vision_encoder(),
        "clip": ClipEncoder({**vit, "intermediate_size": 64}, select_layer=-2),
        "dinov2": Dinov2Encoder(vit, image_size=48),
        "dinov2_swiglu": Dinov2Encoder({**vit, "use_swiglu_ffn": True}),
        "frame_cnn": FrameCNN(out_dim=8, channels=(4, 8), image_size=32, grid=(2, 2)),
        "whisper": tiny_audio_encoder(),
        "mel_cnn": MelCNN(),
    }


@pytest.mark.parametrize(
    "name", ["siglip", "clip", "dinov2", "dinov2_swiglu", "frame_cnn", "whisper", "mel_cnn"]
)
def test_tower_forward_flops_match_flop_counter(name):
    from vidtempo.models.flops import _audio_ops, _vision_ops

    enc = _towers()[name]
    audio = name in ("whisper", "mel_cnn")
    seconds = 45.0 if name == "whisper" else 5.0  # Whisper: two 30-s windows
    ops = _audio_ops(enc, seconds) if audio else _vision_ops(enc).scaled(3)
    inputs = (torch.randn(1, int(seconds * 16000)),) if audio else (torch.rand(3, 3, 40, 40),)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        enc(inputs[0], torch.tensor([inputs[0].shape[1]])) if audio else enc.encode(inputs[0])
    predicted = ops.weight + ops.attn + ops.dead
    assert abs(predicted / counter.get_total_flops() - 1) < 0.05, (predicted, counter.get_total_flops())


@pytest.mark.parametrize("plan", list(PLANS))
def test_audio_visual_video_llm_matches_flop_counter(plan):
    """Tiny Whisper (8 s, one window) + pool compressor with per-frame audio: audio tower, its front end and the
    compressor's audio projection."""
    model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
                             "audio_encoder": {"_target_": "tiny"}, "llm": {"_target_": "tiny"},
                             "compressor": {"_target_": "pool", "in_dim": 32, "audio_dim": 32}})  # fmt: skip
    model.set_trainable(TrainableParts(**PLANS[plan], audio_encoder=plan == "all"))
    ids = torch.randint(5, 100, (1, TEXT + 1))
    ids[0, 3] = VIDEO_TOKEN_INDEX
    video = VideoInputs(frames=torch.rand(1, FRAMES, 3, 32, 32), timestamps=torch.arange(FRAMES)[None] + 0.5,
                        audio=torch.randn(1, 8 * 16000), audio_lengths=torch.tensor([8 * 16000]))  # fmt: skip
    model.train(True)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(ids, torch.ones_like(ids), labels=ids.clamp(min=0), video=video).loss.backward()
    predicted = model_flops(model, FRAMES, TEXT, audio_seconds=8.0).train
    assert abs(predicted / counter.get_total_flops() - 1) < 0.05


def test_the_flop_model_runs_no_encoder(monkeypatch):
    """Under FSDP an encoder forward is a collective: the callback must not run one per new sample shape."""
    model = _pool()

    def refuse(*args, **kwargs):
        raise AssertionError("model_flops ran the vision encoder")

    monkeypatch.setattr(model.vision_encoder, "encode", refuse)
    report = model_flops(model, FRAMES, TEXT)
    assert report.video_tokens == FRAMES * 4 and not report.unmodelled
