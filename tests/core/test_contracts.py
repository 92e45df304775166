"""Every registered component through the same contract checks: shapes, dtypes, declared capabilities equal to
provided ones, and a save / load round trip that reproduces the outputs.

Each alias of the checked kinds needs an entry in ``BUILD`` (small constructor arguments: real widths where a
preset fixes them, depth cut to one block): a new registration without one fails ``test_every_alias_has_a_
contract_entry``, so nothing registered goes unchecked.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from vidtempo.models.interfaces import (
    CAPABILITIES,
    AudioEncoder,
    AudioFeatures,
    CompressorInput,
    TokenCompressor,
    VideoInputs,
    VideoModel,
    VideoTokens,
    VisionEncoder,
)
from vidtempo.registry import get_registry

TINY_VIT = {"_target_": "tiny"}
# kind -> alias -> constructor kwargs (recipe-style nodes are built by the registry's instantiate)
BUILD: dict[str, dict[str, dict[str, Any]]] = {
    "vision_encoder": {
        "tiny": {},
        "siglip": {"config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2, "image_size": 32, "patch_size": 8}},
        "clip": {"config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "image_size": 32, "patch_size": 8}},
        "dinov2": {"config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                              "image_size": 32, "patch_size": 8}},
        "timm": {"model_name": "vit_tiny_patch16_224", "depth": 1, "img_size": 32},
        "siglip_so400m": {"config": {"num_hidden_layers": 1}},
        "dinov2_giant": {"config": {"num_hidden_layers": 1}},
        "clip_vit_l14": {"config": {"num_hidden_layers": 1}},
        "eva02_clip_l": {"depth": 1},
        "concat": {"towers": [TINY_VIT, {"_target_": "pixels", "image_size": 16, "patch": 8}]},
        "pixels": {"image_size": 16, "patch": 8},
        "frame_cnn": {"out_dim": 16, "channels": [4, 8], "image_size": 24},
    },
    "audio_encoder": {
        "tiny": {},
        "whisper": {"config": {"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2,
                               "encoder_ffn_dim": 32, "num_mel_bins": 80}},
        "mel_cnn": {"out_dim": 16, "n_mels": 40, "channels": [8]},
        "whisper_small": {"config": {"encoder_layers": 1}},
        "whisper_large_v3": {"config": {"encoder_layers": 1}},
    },
    "compressor": {
        "pool": {"in_dim": 8, "stride": 2, "audio_dim": 16},
        "tdc": {"in_dim": 8, "llm_dim": 16, "qformer": "tiny", "audio_dim": 16, "audio_tokens_per_frame": 2},
        "t_fuseformer": {"in_dim": 8, "audio_dim": 16, "width": 16, "num_heads": 2, "depth": 1, "visual_queries": 6,
                         "audio_queries": 2, "fusion_tokens": 4, "num_queries": 4, "local_grid": [2, 2],
                         "audio_segments": 2, "segment_seconds": None, "audio_local_tokens": 2, "qformer": "tiny"},
    },
    "projector": {"mlp": {"in_dim": 8, "out_dim": 16}, "linear": {"in_dim": 8, "out_dim": 16},
                  "identity": {"dim": 8}},
    "aux_loss": {"saliency": {"slots": 3}, "frame_tags": {}, "encoder_tags": {"slots": 2}},
    "target_builder": {"event_tags": {"labels": ["red circle", "beep"], "window": ["beep"]},
                       "synth_frame_slots": {}},
    "objective": {"sft": {}, "dpo": {"reference": "frozen_copy"}, "align": {}},
}  # fmt: skip


def build(kind: str, alias: str) -> Any:
    from vidtempo.config.instantiate import instantiate

    return instantiate({"_target_": alias, "_kind_": kind, **BUILD[kind][alias]}, key=kind)


def round_trip(module: torch.nn.Module, kind: str, alias: str) -> torch.nn.Module:
    """A fresh module of the same alias with ``module``'s state loaded strictly (as a checkpoint would)."""
    torch.manual_seed(1234)  # other random weights: equal outputs then prove the state carried them
    fresh = build(kind, alias)
    fresh.load_state_dict(module.state_dict(), strict=True)
    return fresh.eval()


@pytest.mark.parametrize("kind", sorted(BUILD))
def test_every_alias_has_a_contract_entry(kind: str):
    assert set(get_registry(kind).names()) == set(BUILD[kind]), "add the new alias to BUILD (its contract check)"


@pytest.mark.parametrize("alias", sorted(BUILD["vision_encoder"]))
def test_vision_encoder_contract(alias: str):
    torch.manual_seed(0)
    enc = build("vision_encoder", alias).eval()
    assert isinstance(enc, VisionEncoder) and isinstance(enc.out_dim, int) and isinstance(enc.image_size, int)
    pixels = torch.rand(2, 3, 40, 40)  # any size: the encoder resizes and normalises itself
    with torch.no_grad():
        feats, grid = enc.encode(pixels)
    assert feats.shape == (2, grid[0] * grid[1], enc.out_dim) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    with torch.no_grad():
        again, _ = round_trip(enc, "vision_encoder", alias).encode(pixels)
    torch.testing.assert_close(again, feats)


@pytest.mark.parametrize("alias", sorted(BUILD["audio_encoder"]))
def test_audio_encoder_contract(alias: str):
    torch.manual_seed(0)
    enc = build("audio_encoder", alias).eval()
    assert isinstance(enc, AudioEncoder) and isinstance(enc.out_dim, int)
    wave = torch.randn(2, 16000) * 0.1  # 1 s; the second row has 0.5 s of audio
    lengths = torch.tensor([16000, 8000])
    if alias == "mel_cnn":  # reads log-mel (the collator's audio_mel), not the waveform
        from vidtempo.data.log_mel import log_mel_spectrogram

        wave = log_mel_spectrogram(wave, enc.n_mels)
    with torch.no_grad():
        out = enc(wave, lengths)
    assert isinstance(out, AudioFeatures)
    b, a = out.feats.shape[:2]
    assert (b, out.feats.shape[2]) == (2, enc.out_dim) and out.times.shape == out.mask.shape == (2, a)
    assert out.mask.dtype == torch.bool and out.mask[1].sum() < out.mask[0].sum()  # shorter track, fewer steps
    assert bool((out.times[:, 1:] >= out.times[:, :-1]).all())
    with torch.no_grad():
        again = round_trip(enc, "audio_encoder", alias)(wave, lengths)
    torch.testing.assert_close(again.feats, out.feats)


def _compressor_input(audio: bool) -> CompressorInput:
    feats = torch.randn(2, 4, 16, 8)  # (B, T, P, D): a 4x4 grid
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    times = torch.arange(4).float().expand(2, 4) + 0.5
    sound = None
    if audio:
        steps = torch.arange(8).float().expand(2, 8) * 0.5 + 0.25
        sound = AudioFeatures(torch.randn(2, 8, 16), steps, torch.ones(2, 8, dtype=torch.bool))
    return CompressorInput(feats=feats, frame_mask=mask, timestamps=times, grid=(4, 4), audio=sound,
                           query=["when is the red circle visible?", "how many beeps?"])  # fmt: skip


@pytest.mark.parametrize("alias", sorted(BUILD["compressor"]))
@pytest.mark.parametrize("audio", [False, True], ids=["video", "audio"])
def test_compressor_contract(alias: str, audio: bool):
    torch.manual_seed(0)
    comp = build("compressor", alias).eval()
    assert isinstance(comp, TokenCompressor)
    inputs = _compressor_input(audio)
    with torch.no_grad():
        out = comp(inputs)
    assert isinstance(out, VideoTokens) and out.tokens.dtype == torch.float32
    assert out.tokens.shape[:2] == out.mask.shape and out.tokens.shape[0] == 2 and out.tokens.shape[2] == comp.out_dim
    assert out.mask.dtype == torch.bool and torch.isfinite(out.tokens[out.mask]).all()
    for row, frames in enumerate((4, 3)):  # num_tokens is exact or an upper bound per video
        assert int(out.mask[row].sum()) <= comp.num_tokens(frames, (4, 4), audio)
    with torch.no_grad():
        again = round_trip(comp, "compressor", alias)(inputs)
    torch.testing.assert_close(again.tokens, out.tokens)


@pytest.mark.parametrize("alias", sorted(BUILD["projector"]))
def test_projector_contract(alias: str):
    torch.manual_seed(0)
    proj = build("projector", alias).eval()
    x = torch.randn(2, 5, 8)
    y = proj(x)
    width = BUILD["projector"][alias].get("out_dim", 8)
    assert y.shape == (2, 5, width) and y.dtype == torch.float32
    torch.testing.assert_close(round_trip(proj, "projector", alias)(x), y)


@pytest.mark.parametrize("alias", sorted(BUILD["target_builder"]))
def test_target_builder_contract(alias: str):
    from vidtempo.data.samples import ConversationSample
    from vidtempo.data.targets import TargetBuilder

    builder = build("target_builder", alias)
    assert isinstance(builder, TargetBuilder)
    meta = {"timestamps": [1.0, 2.0], "events": [["red circle", 0.0, 1.2], ["beep", 1.7, 1.8]]}
    samples = [ConversationSample(video=None, messages=[], id=i, meta=meta) for i in ("a", "b")]
    times, mask = torch.tensor([[0.5, 1.5, 2.5], [0.5, 1.5, 0.0]]), torch.tensor([[True] * 3, [True, True, False]])
    out = builder(samples, times, mask)
    assert out.shape == (2, 3, builder.channels) and out.dtype == torch.float32
    assert torch.isnan(out[1, 2]).all()  # a padded frame is unknown
    known = out[~torch.isnan(out)]
    assert ((known == 0) | (known == 1)).all()


# ------------------------------------------------------------------------------------------- whole models
def tiny_video_llm(audio: bool = True) -> VideoModel:
    from vidtempo.models.build import build_video_llm

    return build_video_llm(MODEL_NODES["video_llm"] if audio else MODEL_NODES["video_llm_no_audio"])


MODEL_NODES = {
    "video_llm": {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
                  "audio_encoder": {"_target_": "tiny"},
                  "compressor": {"_target_": "pool", "in_dim": 32, "audio_dim": 32}, "llm": {"_target_": "tiny"}},
    "video_llm_no_audio": {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
                           "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}},
    "qwen2_5_vl": {"_target_": "vidtempo.models.native.qwen2_5_vl.Qwen25VLVideoModel",
                   "llm": {"_target_": "tiny_qwen2_5_vl"}, "min_pixels": 784, "max_pixels": 3136},
}  # fmt: skip


def _video(model: VideoModel) -> tuple[torch.Tensor, torch.Tensor, VideoInputs]:
    side = 56 if "cached_features" not in model.capabilities else 32
    ids = torch.tensor([[5, -200, 7, 8], [6, -200, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    video = VideoInputs(frames=torch.rand(2, 4, 3, side, side), frame_mask=torch.tensor([[True] * 4, [True] * 4]),
                        timestamps=torch.arange(4).float().expand(2, 4) + 0.5, queries=["q one", "q two"])  # fmt: skip
    return ids, mask, video


def _provides(model: VideoModel, capability: str) -> bool:
    """Whether ``model`` actually provides ``capability`` (independent of what it declares)."""
    ids, mask, video = _video(model)
    try:
        with torch.no_grad():
            if capability == "hidden_states":
                out = model(ids, mask, video=video, return_hidden=True)
                return out.hidden_states is not None and out.hidden_states[-1].shape[-1] == model.hidden_size
            out = model(ids, mask, video=video)
            if capability == "frame_features":
                feats = out.info.get("frame_features")
                return feats is not None and feats.shape[:2] == (2, 4) and feats.shape[-1] == model.frame_feature_dim
            if capability == "token_frames":
                owners = out.info.get("token_frames")
                if owners is not None:
                    return owners.shape[0] == 2
                return "frame_features" in out.info and all(int(n) % 4 == 0 for n in out.num_video_tokens)
            if capability == "cached_features":
                feats = out.info.get("frame_features")
                cached = VideoInputs(features=feats, grid=(4, 4), frame_mask=video.frame_mask,
                                     timestamps=video.timestamps, queries=video.queries)  # fmt: skip
                return torch.allclose(model(ids, mask, video=cached).logits, out.logits, atol=1e-5)
            if capability == "audio":
                sound = VideoInputs(**{**video.__dict__, "audio": torch.randn(2, 8000) * 0.1,
                                       "audio_lengths": torch.tensor([8000, 0])})  # fmt: skip
                return not torch.allclose(model(ids, mask, video=sound).logits, out.logits)
            if capability == "packing":  # both samples in one row: the unpacked loss
                labels = ids.clamp(min=0)
                packed = model(ids, mask, labels=labels, video=video, packing=4096)
                return abs(float(packed.loss) - float(model(ids, mask, labels=labels, video=video).loss)) < 1e-5
            if capability == "embed_frames":
                return model.embed_frames(video.frames[0]).shape[0] == 4
            if capability == "embed_video":
                return model.embed_video(video).shape[0] == 2
            if capability == "embed_text":
                return model.embed_text(["a", "b"]).shape[0] == 2
    except (NotImplementedError, ValueError, TypeError, KeyError, AttributeError):
        return False
    raise AssertionError(f"no check for capability {capability}")


@pytest.mark.parametrize("name", sorted(MODEL_NODES))
def test_video_model_contract_capabilities_declared_equal_provided_and_round_trip(name: str, tmp_path: Path):
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import load_pretrained, save_pretrained

    torch.manual_seed(0)
    model = build_video_llm(MODEL_NODES[name]).eval()
    assert isinstance(model, VideoModel)
    assert set(model.capabilities) <= set(CAPABILITIES)
    provided = {c for c in CAPABILITIES if _provides(model, c)}
    assert provided == set(model.capabilities), f"declared {sorted(model.capabilities)}, provided {sorted(provided)}"
    ids, mask, video = _video(model)
    with torch.no_grad():
        out = model(ids, mask, labels=ids.clamp(min=0), video=video)
        new = model.generate(ids, mask, video=video, max_new_tokens=3)
    assert out.logits.shape[:2] == out.labels.shape == out.attention_mask.shape and out.loss.ndim == 0
    assert out.num_video_tokens.shape == (2,) and int(out.num_video_tokens[0]) <= model.video_tokens(4, "audio" in
                                                                                                      model.capabilities)
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 3
    assert model.frame_size > 0 and set(model.parameter_counts()) >= {"llm"}
    save_pretrained(model, tmp_path, model_config=MODEL_NODES[name])
    loaded = load_pretrained(tmp_path, load_tokenizer=False)[0].eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, video=video).logits, out.logits, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- training plug-ins
@pytest.mark.parametrize("alias", sorted(BUILD["aux_loss"]))
def test_aux_loss_contract(alias: str, tmp_path: Path):
    """Bound to a model that provides what it declares, each loss gives a finite scalar with gradient, and its
    heads survive the stage hand-over (save, load into a fresh loss of the same name)."""
    from vidtempo.training.auxiliary import AuxLoss
    from vidtempo.training.head_io import load_heads, save_heads
    from vidtempo.training.sft import SFTModule

    torch.manual_seed(0)
    model = tiny_video_llm(audio=False)
    loss = build("aux_loss", alias)
    assert isinstance(loss, AuxLoss) and set(loss.requires) <= set(CAPABILITIES)
    channels = {name: 3 for name in loss.targets}
    module = SFTModule(model, aux={alias: loss}, targets=channels)
    ids, mask, video = _video(model)
    batch = SimpleNamespace(input_ids=ids, attention_mask=mask, frame_mask=video.frame_mask,
                            targets={name: torch.rand(2, 4, 3).round() for name in loss.targets})  # fmt: skip
    out = model(ids, mask, video=video, return_hidden=module.needs_hidden)
    value = module.aux[alias](out, batch)
    assert value.ndim == 0 and torch.isfinite(value) and value.requires_grad
    save_heads(module, tmp_path)
    torch.manual_seed(1)
    other = SFTModule(tiny_video_llm(audio=False), aux={alias: build("aux_loss", alias)}, targets=channels)
    assert load_heads(other, tmp_path) == [alias]
    for a, b in zip(module.aux.parameters(), other.aux.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("alias", sorted(BUILD["objective"]))
def test_objective_contract(alias: str):
    """Each objective is an ``Objective`` with at most 5 constructor parameters of its own beyond the method's
    hyper-parameters, declares a collator class and validates its recipe section."""
    from vidtempo.training.objective import Objective

    cls = get_registry("objective").resolve(alias)
    assert issubclass(cls, Objective) and callable(cls.check_recipe) and isinstance(cls.collator_class, type)
    module = cls(tiny_video_llm(audio=False), optim={"lr": 1e-3}, **BUILD["objective"][alias])
    assert module.optim.lr == 1e-3 and module.skips.skipped == 0
    cls.check_recipe({"objective": {"_target_": alias}, "data": {}}, "r.yaml", "")
    module.skips.seen, module.skips.skipped = 40, 2  # its checkpoint state survives a save / resume
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    resumed = cls(tiny_video_llm(audio=False), optim={"lr": 1e-3}, **BUILD["objective"][alias])
    resumed.on_load_checkpoint(checkpoint)
    assert (resumed.skips.seen, resumed.skips.skipped) == (40, 2)
    assert resumed.checkpoint_state() == module.checkpoint_state()


def test_sft_takes_at_most_five_constructor_parameters():
    from vidtempo.training.sft import SFTModule

    params = [p for p in inspect.signature(SFTModule.__init__).parameters if p != "self"]
    assert len(params) <= 5, params
