"""Vision and audio encoders: shapes, layer selection, weight round trips, Whisper windows and log-mel parity."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidtempo.models.encoders import presets
from vidtempo.models.encoders.cnn import FrameCNN
from vidtempo.models.encoders.hf_vision import ClipEncoder, Dinov2Encoder, SiglipEncoder
from vidtempo.models.encoders.timm_vision import TimmEncoder
from vidtempo.models.encoders.whisper import log_mel_spectrogram
from vidtempo.models.interfaces import AudioEncoder, VisionEncoder
from vidtempo.registry import get_registry

TINY_VIT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
TINY_DINO = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 8,
    "image_size": 32,
}
TINY_TIMM = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 32, "num_heads": 2}


def _pixels(n: int = 3, h: int = 40, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ registry
@pytest.mark.parametrize("kind", ["vision_encoder", "audio_encoder"])
def test_every_registered_alias_resolves(kind: str) -> None:
    for name in get_registry(kind).names():
        assert callable(get_registry(kind).resolve(name)), name


def test_package_import_is_light() -> None:
    code = "import sys, vidtempo.models.encoders; print(sorted({'torch', 'transformers', 'timm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ HF towers
@pytest.mark.parametrize(
    ("cls", "config", "kwargs", "num_tokens", "grid"),
    [
        (SiglipEncoder, TINY_VIT, {}, 16, (4, 4)),
        (ClipEncoder, TINY_VIT, {}, 16, (4, 4)),
        (ClipEncoder, TINY_VIT, {"drop_cls": False}, 17, (4, 4)),
        (Dinov2Encoder, TINY_DINO, {}, 16, (4, 4)),
        (Dinov2Encoder, TINY_DINO, {"image_size": 48}, 36, (6, 6)),  # DINOv2 at a non-native size
        (SiglipEncoder, TINY_VIT, {"image_size": 40}, 25, (5, 5)),  # interpolated position embeddings
        (SiglipEncoder, TINY_VIT, {"pool_to": [3, 3]}, 9, (3, 3)),
    ],
)
def test_hf_tower_shapes(cls: type, config: dict, kwargs: dict, num_tokens: int, grid: tuple) -> None:
    enc = cls(config, **kwargs).eval()
    assert isinstance(enc, VisionEncoder)
    feats, out_grid = enc.encode(_pixels())
    assert tuple(feats.shape) == (3, num_tokens, 32)
    assert out_grid == grid == enc.grid
    assert torch.isfinite(feats).all()


def test_select_layer_indexes_hidden_states() -> None:
    torch.manual_seed(0)
    enc = SiglipEncoder(TINY_VIT, select_layer=-2).eval()
    pix = _pixels(2, 32, 32)
    with torch.no_grad():
        ref = enc.tower(pixel_values=(pix - 0.5) / 0.5, output_hidden_states=True).hidden_states
        feats, _ = enc.encode(pix)
        enc.select_layer = -1
        last, _ = enc.encode(pix)
    torch.testing.assert_close(feats, ref[-2])
    torch.testing.assert_close(last, ref[-1])
    assert not torch.allclose(feats, last)
    with pytest.raises(ValueError, match="select_layer=5 is out of range"):
        SiglipEncoder(TINY_VIT, select_layer=5)


def test_clip_drops_cls_and_pools_bilinearly() -> None:
    torch.manual_seed(0)
    enc = ClipEncoder(TINY_VIT, drop_cls=False).eval()
    pooled = ClipEncoder(TINY_VIT, pool_to=(2, 2)).eval()
    pooled.load_state_dict(enc.state_dict())
    with torch.no_grad():
        full, _ = enc.encode(_pixels(2))  # (2, 1 + 16, 32): CLS first
        small, grid = pooled.encode(_pixels(2))
    patches = full[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4)
    expected = torch.nn.functional.interpolate(patches, size=(2, 2), mode="bilinear", align_corners=False)
    torch.testing.assert_close(small, expected.flatten(2).transpose(1, 2))
    assert grid == (2, 2)


@pytest.mark.parametrize(("cls", "config"), [(SiglipEncoder, TINY_VIT), (Dinov2Encoder, TINY_DINO)])
def test_hf_save_load_round_trip(tmp_path, cls: type, config: dict) -> None:
    torch.manual_seed(0)
    src = cls(config).eval()
    src.save_pretrained(tmp_path / "tower")
    torch.manual_seed(1)
    dst = cls(config).eval()
    pix = _pixels(2, 32, 32)
    with torch.no_grad():
        want = src.encode(pix)[0]
        assert not torch.equal(dst.encode(pix)[0], want)  # a different random init
        assert dst.load_pretrained(tmp_path / "tower") is dst
        assert torch.equal(dst.encode(pix)[0], want)
    with torch.device("meta"):  # built for inspection, then loaded for real
        lazy = cls(config)
    lazy.load_pretrained(tmp_path / "tower").eval()
    with torch.no_grad():
        assert torch.equal(lazy.encode(pix)[0], want)


def test_siglip_loads_vision_tower_of_full_checkpoint(tmp_path) -> None:
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 50,
        "max_position_embeddings": 16,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    full = SiglipModel(SiglipConfig(vision_config=TINY_VIT, text_config=text)).eval()
    full.save_pretrained(tmp_path)
    enc = SiglipEncoder(name_or_path=tmp_path).load_pretrained(tmp_path).eval()
    pix = _pixels(1, 32, 32)
    with torch.no_grad():
        want = full.vision_model(pixel_values=(pix - 0.5) / 0.5, output_hidden_states=True).hidden_states[-1]
        torch.testing.assert_close(enc.encode(pix)[0], want)


def test_hf_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown config key.*'hiden_size'"):
        SiglipEncoder({"hiden_size": 32})
    with pytest.raises(FileNotFoundError, match="neither a local model directory.*nor a hub id in the local cache"):
        SiglipEncoder(TINY_VIT).load_pretrained(tmp_path / "nope")
    SiglipEncoder(TINY_VIT).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hidden_size=32 but this encoder was built with hidden_size=16"):
        SiglipEncoder({**TINY_VIT, "hidden_size": 16}).load_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"pixels of shape \(N, 3, H, W\)"):
        SiglipEncoder(TINY_VIT).encode(torch.rand(3, 32, 32))


# ------------------------------------------------------------------------------------------ timm
def test_timm_shapes_and_select_layer() -> None:
    torch.manual_seed(0)
    enc = TimmEncoder("vit_tiny_patch16_224", **TINY_TIMM).eval()
    pix = _pixels()
    with torch.no_grad():
        feats, grid = enc.encode(pix)
        x = (torch.nn.functional.interpolate(pix, size=(32, 32), mode="bilinear") - 0.5) / 0.5
        tokens = enc.model.patch_embed(x)
        tokens = enc.model.norm_pre(enc.model._pos_embed(tokens))
        tokens = enc.model.blocks[0](tokens)
        enc_l1 = TimmEncoder("vit_tiny_patch16_224", select_layer=1, drop_prefix=False, **TINY_TIMM).eval()
        enc_l1.load_state_dict(enc.state_dict())
        first, _ = enc_l1.encode(pix)
    assert tuple(feats.shape) == (3, 16, 32) and grid == (4, 4) == enc.grid
    torch.testing.assert_close(first, tokens)  # block 1 output, CLS kept
    assert enc.mean == (0.5, 0.5, 0.5)  # from timm's pretrained_cfg
    with pytest.raises(ValueError, match="select_layer=0"):
        TimmEncoder("vit_tiny_patch16_224", select_layer=0, **TINY_TIMM)
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmEncoder("vit_tinny_patch16_224")


def test_timm_round_trip_file_and_dir(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = TimmEncoder("vit_tiny_patch16_224", select_layer=-2, pool_to=(2, 2), **TINY_TIMM).eval()
    src.save_pretrained(tmp_path / "dir")
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    save_file({**state, "head.weight": torch.zeros(10, 32)}, tmp_path / "with_head.safetensors")
    torch.save({"state_dict": state}, tmp_path / "ckpt.pth")
    pix = _pixels(2)
    with torch.no_grad():
        want, grid = src.encode(pix)
        for source in ("dir", "with_head.safetensors", "ckpt.pth"):
            torch.manual_seed(1)
            dst = TimmEncoder("vit_tiny_patch16_224", select_layer=-2, pool_to=(2, 2), **TINY_TIMM).eval()
            assert not torch.equal(dst.encode(pix)[0], want)
            assert torch.equal(dst.load_pretrained(tmp_path / source).encode(pix)[0], want), source
        with torch.device("meta"):
            lazy = TimmEncoder("vit_tiny_patch16_224", select_layer=-2, pool_to=(2, 2), **TINY_TIMM)
        assert torch.equal(lazy.load_pretrained(tmp_path / "dir").eval().encode(pix)[0], want)
    assert grid == (2, 2)
    with pytest.raises(FileNotFoundError, match="neither a weights file"):
        src.load_pretrained(tmp_path / "missing")


# ------------------------------------------------------------------------------------------ CNN
def test_frame_cnn_shapes_and_gradients() -> None:
    enc = FrameCNN(out_dim=16, channels=(8, 16), image_size=48, grid=(3, 3))
    feats, grid = enc.encode(_pixels(4, 30, 50))
    assert tuple(feats.shape) == (4, 9, 16) and grid == (3, 3)
    feats.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    with pytest.raises(ValueError, match="smaller than grid"):
        FrameCNN(image_size=16, channels=(8, 8, 8), grid=(3, 3))


# ------------------------------------------------------------------------------------------ audio
def _tone(seconds: float, freq: float = 440.0, seed: int = 0) -> torch.Tensor:
    t = torch.arange(int(seconds * 16000)) / 16000
    noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(seed))
    return 0.5 * torch.sin(2 * math.pi * freq * t) + 0.05 * noise


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_whisper_feature_extractor(n_mels: int) -> None:
    from transformers import WhisperFeatureExtractor

    wave = _tone(4.0)
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    padded = np.zeros(480000, dtype=np.float32)
    padded[: wave.numel()] = wave.numpy()
    ref_np = fe._np_extract_fbank_features(padded[None].astype(np.float64), "cpu")  # numpy reference
    ref_public = fe(wave.numpy(), sampling_rate=16000, return_tensors="np").input_features
    ours = log_mel_spectrogram(torch.from_numpy(padded)[None], n_mels)
    assert ours.shape == (1, n_mels, 3000)
    np.testing.assert_allclose(ours.numpy(), ref_np, atol=1e-4)
    np.testing.assert_allclose(ours.numpy(), ref_public, atol=1e-4)


def test_whisper_windows_times_and_mask() -> None:
    torch.manual_seed(0)
    enc = presets.tiny_audio_encoder().eval()
    assert isinstance(enc, AudioEncoder)
    assert (enc.window_samples, enc.steps_per_window, enc.step_seconds) == (480000, 1500, 0.02)
    long, short = _tone(35.0, seed=1), _tone(10.0, 880.0, seed=2)
    wave = torch.zeros(3, long.numel())
    wave[0], wave[1, : short.numel()] = long, short
    wave[1, short.numel() :] = 7.0  # garbage past row 1's length must be ignored
    lengths = torch.tensor([long.numel(), short.numel(), 0])  # row 2: no audio track
    with torch.no_grad():
        out = enc(wave, lengths)
        alone = enc(short[None], torch.tensor([short.numel()]))
        mel = log_mel_spectrogram(
            torch.nn.functional.pad(long[480000:], (0, 480000 - (long.numel() - 480000)))[None]
        )
        second_window = enc.encoder(mel).last_hidden_state[0]  # (1500, D)
    assert tuple(out.feats.shape) == (3, 1750, 32)  # 35 s at 50 steps/s
    torch.testing.assert_close(out.times[0, [0, 1, 1499, 1500]], torch.tensor([0.01, 0.03, 29.99, 30.01]))
    assert torch.equal(out.times[0], out.times[2])
    assert out.mask.sum(1).tolist() == [1750, 500, 0]
    assert out.mask[1, :500].all() and not out.mask[1, 500:].any()
    assert torch.count_nonzero(out.feats[2]) == 0  # nothing encoded for the silent row
    torch.testing.assert_close(out.feats[1, :500], alone.feats[0, :500], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.feats[0, 1500:], second_window[:250], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\)"):
        enc(wave, torch.tensor([1, 2]))


def test_whisper_loads_encoder_from_full_checkpoint(tmp_path) -> None:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    full = WhisperForConditionalGeneration(WhisperConfig(**presets.TINY_WHISPER)).eval()
    full.save_pretrained(tmp_path / "full")
    enc = presets.tiny_audio_encoder()
    enc.save_pretrained(tmp_path / "enc")
    wave, lengths = _tone(3.0)[None], torch.tensor([48000])
    with torch.no_grad():
        mel = log_mel_spectrogram(torch.nn.functional.pad(wave, (0, 480000 - 48000)))
        want = full.model.encoder(mel).last_hidden_state[:, :150]
        got = presets.tiny_audio_encoder().load_pretrained(tmp_path / "full").eval()(wave, lengths).feats
        torch.testing.assert_close(got, want)
        mine = enc.eval()(wave, lengths).feats
        with torch.device("meta"):
            lazy = presets.tiny_audio_encoder()
        assert torch.equal(lazy.load_pretrained(tmp_path / "enc").eval()(wave, lengths).feats, mine)


# ------------------------------------------------------------------------------------------ real presets
@pytest.mark.parametrize(
    ("builder", "public_params", "out_dim", "grid"),
    [
        (presets.siglip_so400m, 428e6, 1152, (27, 27)),  # SigLIP-so400m vision tower (with pooling head)
        (presets.dinov2_giant, 1.136e9, 1536, (37, 37)),  # DINOv2-giant, 518 px
        (presets.clip_vit_l14, 303.5e6, 1024, (24, 24)),  # CLIP ViT-L/14-336 vision tower
        (presets.eva02_clip_l, 304e6, 1024, (24, 24)),  # EVA02-CLIP-L/14-336 image tower
    ],
)
def test_real_vision_presets_on_meta(builder, public_params: float, out_dim: int, grid: tuple) -> None:
    with torch.device("meta"):
        enc = builder()
    params = sum(p.numel() for p in enc.parameters())
    assert abs(params - public_params) / public_params < 0.01, params
    assert (enc.out_dim, enc.grid) == (out_dim, grid)
    assert all(p.is_meta for p in enc.parameters())


def test_real_audio_presets_on_meta() -> None:
    with torch.device("meta"):
        small, large = presets.whisper_small(), presets.whisper_large_v3()
    params = sum(p.numel() for p in small.parameters())
    assert abs(params - 88e6) / 88e6 < 0.01, params  # Whisper-small encoder
    assert (small.out_dim, small.n_mels, large.out_dim, large.n_mels) == (768, 80, 1280, 128)
    assert large.encoder.conv1.in_channels == 128


def test_tdc_siglip_and_dinov2_geometry_on_meta() -> None:
    with torch.device("meta"):
        siglip = presets.siglip_so400m(pool_to=24)
        dino = presets.dinov2_giant(image_size=378, pool_to=(24, 24))
    assert siglip.native_grid == dino.native_grid == (27, 27)  # methods.md 2.2: 27x27 -> 24x24
    assert siglip.grid == dino.grid == (24, 24)
