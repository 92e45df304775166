"""Lean build of the pretrained towers and of ``pytorch_model.bin`` checkpoints (#27 item 2, open parts): vision
and audio towers built on the meta device and loaded straight into their target dtype give the outputs of the
old path (random fp32 init, then the weights), within 1.3x their bf16 weight bytes of host memory; LLM
checkpoints saved as ``pytorch_model.bin`` (whole or sharded) load lean with the logits of ``from_pretrained``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidtempo.models.build import build_video_llm
from vidtempo.models.encoders.hf_vision import ClipEncoder, Dinov2Encoder, SiglipEncoder
from vidtempo.models.encoders.presets import TINY_WHISPER
from vidtempo.models.encoders.timm_vision import TimmEncoder
from vidtempo.models.encoders.whisper import WhisperAudioEncoder
from vidtempo.models.llms.hf import HFCausalLM
from vidtempo.models.llms.presets import tiny_llm
from vidtempo.models.weights import TorchBinReader, checkpoint_files, empty_init, meta_parameters

ROOT = Path(__file__).resolve().parents[2]
VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
       "image_size": 32, "patch_size": 8}  # fmt: skip
DINO_SWIGLU = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 8,
               "image_size": 32, "use_swiglu_ffn": True, "layerscale_value": 0.5}  # fmt: skip
TIMM = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


def _tower(kind: str) -> torch.nn.Module:
    if kind == "siglip":
        return SiglipEncoder(VIT)
    if kind == "clip":
        return ClipEncoder(VIT, drop_cls=False)
    if kind == "dinov2_swiglu":  # transformers 5 renames its keys and splits the fused SwiGLU input on load
        return Dinov2Encoder(DINO_SWIGLU)
    if kind == "whisper":
        return WhisperAudioEncoder(TINY_WHISPER)
    return TimmEncoder("vit_tiny_patch16_224", **TIMM)


def _out(enc: torch.nn.Module, kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        if kind == "whisper":
            return enc(torch.randn(2, 20000, generator=gen), torch.tensor([20000, 9000])).feats
        return enc.encode(torch.rand(2, 3, 32, 32, generator=gen))[0]


@pytest.mark.parametrize("kind", ["siglip", "clip", "dinov2_swiglu", "whisper", "timm"])
def test_a_lean_built_tower_gives_the_outputs_of_the_old_path(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    src = _tower(kind).eval()
    src.save_pretrained(tmp_path / "w")
    torch.manual_seed(1)
    old = _tower(kind).eval()  # the old path: random fp32 init, then the weights over it
    old.load_pretrained(tmp_path / "w")
    assert torch.equal(_out(old, kind), _out(src, kind))
    for dtype in (torch.float32, torch.bfloat16):
        with empty_init():
            lean = _tower(kind)
        assert len(meta_parameters(lean)) == len(list(lean.parameters()))  # nothing allocated, nothing drawn
        lean.load_pretrained(tmp_path / "w", dtype=dtype)
        lean.eval()
        assert not meta_parameters(lean)
        assert {p.dtype for p in lean.parameters()} == {dtype}
        want = _out(copy.deepcopy(old).to(dtype), kind)  # bf16-true casts the old build
        assert torch.equal(_out(lean, kind), want), (kind, dtype)


def test_build_video_llm_builds_a_weighted_tower_lean(tmp_path: Path) -> None:
    SiglipEncoder(VIT).save_pretrained(tmp_path / "tower")
    node = {"_target_": "vidtempo.models.VideoLLM",
            "vision_encoder": {"_target_": "siglip", "config": VIT, "name_or_path": str(tmp_path / "tower")},
            "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}  # fmt: skip
    calls = []
    original = torch.nn.init.normal_
    torch.nn.init.normal_ = lambda t, *a, **k: (calls.append((t.is_meta, tuple(t.shape))), original(t, *a, **k))[1]  # type: ignore  # noqa: E501
    try:
        model = build_video_llm(node, weights={"vision_encoder": None}, dtype=torch.bfloat16)
    finally:
        torch.nn.init.normal_ = original
    assert {p.dtype for p in model.vision_encoder.parameters()} == {torch.bfloat16}
    assert not meta_parameters(model)
    position = next(tuple(p.shape) for n, p in model.vision_encoder.named_parameters()
                    if n.endswith("position_embedding.weight"))  # (16, 32)  # fmt: skip
    inits = [meta for meta, shape in calls if shape == position]  # the tower's embedding init ran on meta only
    assert inits and all(inits), calls
    with pytest.raises(ValueError, match="hidden_size"):
        SiglipEncoder({**VIT, "hidden_size": 64}).load_pretrained(tmp_path / "tower")


def test_peak_memory_to_build_a_real_width_tower_is_at_most_1_3x_its_bf16_weights(tmp_path: Path) -> None:
    """A 2-block SigLIP-so400m-width tower (0.10 GB in bf16) from an fp32 checkpoint, built in bf16 in a fresh
    process: the RSS it adds over the imports stays under 1.3x its bf16 weight bytes
    (``benchmarks/build_memory.py --tower``; the old build needs about 4x)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import build_memory
    finally:
        sys.path.pop(0)
    weight_bytes = build_memory.write_tower_checkpoint(2, tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "build_memory.py"), "--child", "tower_lean",
                          str(tmp_path)], capture_output=True, text=True, check=True)  # fmt: skip
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["dtypes"] == ["torch.bfloat16"]
    growth = (row["peak_kb"] - row["imports_kb"]) * 1024
    assert growth <= 1.3 * weight_bytes, (growth / weight_bytes, row)


def _save_bin(model: torch.nn.Module, out: Path, shards: int) -> None:
    """``pytorch_model.bin`` (one shard) or ``pytorch_model-0000i-of-0000n.bin`` + its index, as transformers 4
    wrote them with ``safe_serialization=False`` (transformers 5 writes safetensors only)."""
    model.config.save_pretrained(out)
    state = model.state_dict()
    if shards == 1:
        torch.save(state, out / "pytorch_model.bin")
        return
    keys, weight_map = list(state), {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = keys[i::shards]
        torch.save({k: state[k] for k in part}, out / name)
        weight_map.update(dict.fromkeys(part, name))
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("shards", [1, 3])
def test_pytorch_model_bin_checkpoints_load_lean_with_the_logits_of_from_pretrained(tmp_path: Path,
                                                                                     shards: int) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    _save_bin(tiny_llm(arch="llama", tie_word_embeddings=True).model, tmp_path, shards)
    files = checkpoint_files(tmp_path)
    assert len(files) == shards and all(f.suffix == ".bin" for f in files)
    with empty_init():
        llm = HFCausalLM(str(tmp_path))
    llm.load_pretrained(dtype=torch.bfloat16)
    assert not meta_parameters(llm) and {p.dtype for p in llm.parameters()} == {torch.bfloat16}
    assert llm.model.lm_head.weight is llm.model.get_input_embeddings().weight  # still tied
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, local_files_only=True)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(llm.model(ids).logits, ref(ids).logits, rtol=0, atol=0)
    reader = TorchBinReader(files)  # a row range of a tensor, as an FSDP2 rank reads it
    rows = torch.empty(2, 64, dtype=torch.bfloat16)
    reader.read_into("model.embed_tokens.weight", rows, start=3)
    assert torch.equal(rows, ref.model.embed_tokens.weight[3:5])
    (tmp_path / files[0].name).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch.save state dict"):
        TorchBinReader(files)


def test_a_concat_encoder_builds_lean_when_weights_name_every_tower(tmp_path: Path) -> None:
    SiglipEncoder(VIT).save_pretrained(tmp_path / "a")
    Dinov2Encoder(DINO_SWIGLU).save_pretrained(tmp_path / "b")
    towers = [{"_target_": "siglip", "config": VIT}, {"_target_": "dinov2", "config": DINO_SWIGLU}]
    node = {"_target_": "vidtempo.models.VideoLLM", "llm": {"_target_": "tiny"},
            "vision_encoder": {"_target_": "concat", "towers": towers, "tower_names": ["a", "b"]},
            "compressor": {"_target_": "pool", "in_dim": 64}}  # fmt: skip
    both = build_video_llm(node, weights={"vision_encoder": {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}},
                           dtype=torch.bfloat16)  # fmt: skip
    assert {p.dtype for p in both.vision_encoder.parameters()} == {torch.bfloat16}  # built on meta, loaded lean
    one = build_video_llm(node, weights={"vision_encoder": {"a": str(tmp_path / "a")}}, dtype=torch.bfloat16)
    assert {p.dtype for p in one.vision_encoder.towers[1].parameters()} == {torch.float32}  # random, as before
    assert not meta_parameters(one)


def _fake_hub_cache(cache: Path, repo_id: str, files: Path) -> None:
    """``files`` laid out as the Hugging Face cache keeps a downloaded snapshot of ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in files.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


@pytest.mark.parametrize("kind", ["siglip", "whisper"])
def test_a_tower_loads_from_a_hub_id_in_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        kind: str) -> None:  # fmt: skip
    """The real recipes name towers by hub id (``google/siglip-so400m-patch14-384``): one already in the local
    cache loads offline, as the LLM does; an id that is not there fails naming it."""
    from huggingface_hub import constants

    torch.manual_seed(0)
    src = _tower(kind).eval()
    src.save_pretrained(tmp_path / "w")
    _fake_hub_cache(tmp_path / "hub", "org/tiny-tower", tmp_path / "w")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(1)
    tower = _tower(kind).eval()
    tower.load_pretrained("org/tiny-tower")
    assert torch.equal(_out(tower, kind), _out(src, kind))
    with pytest.raises(FileNotFoundError, match="org/not-cached"):
        tower.load_pretrained("org/not-cached")
