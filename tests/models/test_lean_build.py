"""Lean build (#27 item 2): parameters on the meta device, weights read tensor by tensor into their target dtype;
peak host memory to build <= 1.3x the weight bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidtempo.models.build import build_video_llm
from vidtempo.models.llms.hf import HFCausalLM
from vidtempo.models.llms.presets import tiny_llm
from vidtempo.models.weights import checkpoint_files, empty_init, load_weights, meta_parameters

ROOT = Path(__file__).resolve().parents[2]


def test_empty_init_puts_parameters_on_meta_and_keeps_buffers():
    with empty_init():
        llm = tiny_llm()
    assert meta_parameters(llm) and len(meta_parameters(llm)) == len(list(llm.parameters()))
    buffers = dict(llm.model.named_buffers())
    assert buffers and not any(b.is_meta for b in buffers.values())  # rotary inv_freq is real
    assert not torch.nn.Linear(2, 2).weight.is_meta  # the patch ends with the block


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_lean_load_equals_the_saved_weights_in_the_target_dtype(tmp_path, arch):
    kw = {"tie_word_embeddings": True} if arch == "llama" else {}
    src = tiny_llm(arch=arch, **kw)
    src.model.save_pretrained(tmp_path)  # fp32 safetensors
    with empty_init():
        llm = HFCausalLM(str(tmp_path))
    llm.load_pretrained(dtype=torch.bfloat16)
    assert not meta_parameters(llm)
    want = src.model.state_dict()
    for name, tensor in llm.model.state_dict().items():
        assert tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor, want[name].to(torch.bfloat16)), name
    if arch == "llama":  # tied: one tensor under both names, trained together
        assert llm.model.lm_head.weight is llm.model.get_input_embeddings().weight
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, local_files_only=True)
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(llm.model(ids).logits, ref(ids).logits, rtol=0, atol=0)


def test_load_in_place_into_a_materialised_model_and_errors(tmp_path):
    src = tiny_llm()
    src.model.save_pretrained(tmp_path)
    llm = tiny_llm()  # random init, fp32: overwritten in place
    weight = llm.model.get_input_embeddings().weight
    llm.load_pretrained(str(tmp_path))
    assert llm.model.get_input_embeddings().weight is weight  # the same Parameter (optimisers keep theirs)
    assert torch.equal(weight, src.model.get_input_embeddings().weight)
    with pytest.raises(ValueError, match="hidden_size is 64 there, 32 here"):
        tiny_llm(hidden_size=32).load_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a local directory nor a hub id in the local cache"):
        tiny_llm().load_pretrained(str(tmp_path / "missing"))
    with empty_init():
        extra = tiny_llm(num_hidden_layers=3)
    extra.model.config.num_hidden_layers = 2  # config check passes; the tensors do not
    with pytest.raises(ValueError, match=r"missing \['model.layers.2"):
        load_weights(extra.model, checkpoint_files(tmp_path))


def test_build_video_llm_builds_the_weighted_llm_lean_in_bf16(tmp_path):
    tiny_llm().model.save_pretrained(tmp_path / "llm")
    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "compressor": {"_target_": "pool", "in_dim": 32},
            "llm": {"_target_": "hf_causal_lm", "name_or_path": str(tmp_path / "llm")}}  # fmt: skip
    calls = []
    original = torch.nn.init.normal_
    torch.nn.init.normal_ = lambda t, *a, **k: (calls.append((t.is_meta, tuple(t.shape))), original(t, *a, **k))[1]  # type: ignore  # noqa: E501
    try:
        model = build_video_llm(node, weights={"llm": None}, dtype=torch.bfloat16)
    finally:
        torch.nn.init.normal_ = original
    assert {p.dtype for p in model.llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.compressor.parameters()} == {torch.float32}  # random parts: as before
    assert not meta_parameters(model)
    embedding = tuple(model.llm.get_input_embeddings().weight.shape)  # (512, 64)
    inits = [meta for meta, shape in calls if shape == embedding]  # the LLM's embedding init ran on meta only
    assert inits and all(inits), calls


def test_peak_memory_to_build_is_at_most_1_3x_the_bf16_weights(tmp_path):
    """A 1024-wide, 2-block Qwen2 (vocabulary 32000: 0.19 GB in bf16) built in a fresh process: the RSS it adds
    over the imports stays under 1.3x its bf16 weight bytes (benchmarks/build_memory.py at real widths)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import build_memory
    finally:
        sys.path.pop(0)
    config = {**build_memory.QWEN2_7B, "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816,
              "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 2}  # fmt: skip
    weight_bytes = build_memory.write_checkpoint(config, tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "build_memory.py"), "--child", "lean",
                          str(tmp_path)], capture_output=True, text=True, check=True)  # fmt: skip
    row = json.loads(out.stdout.strip().splitlines()[-1])
    growth = (row["peak_kb"] - row["imports_kb"]) * 1024
    assert row["dtypes"] == ["torch.bfloat16"]
    assert growth <= 1.3 * weight_bytes, (growth / weight_bytes, row)
