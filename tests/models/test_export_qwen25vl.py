"""`vidtempo export`: a native Qwen2.5-VL checkpoint with LoRA (LLM and ViT adapters, non-zero) and a trained
merger, saved through `save_pretrained`, exported, then loaded with plain transformers
(`Qwen2_5_VLForConditionalGeneration` + `AutoProcessor`): same logits as vidtempo's on a real mp4 (fp32,
atol 1e-5), both from vidtempo's prepared inputs and from the exported processor + chat template."""

from __future__ import annotations

import json

import pytest
import torch

from vidtempo.cli.main import main
from vidtempo.data.collate import VideoCollator
from vidtempo.data.samples import ConversationSample
from vidtempo.models.native.qwen2_5_vl import tiny_qwen2_5_vl_tokenizer

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
NODE = {"_target_": "vidtempo.models.native.qwen2_5_vl.Qwen25VLVideoModel",
        "llm": {"_target_": "vidtempo.models.native.qwen2_5_vl.tiny_qwen2_5_vl"},
        "trainable": {"vision_encoder": "lora", "projector": True, "llm": "lora"},
        "lora": LORA, "lora_vit": {**LORA, "alpha": 4}, "min_pixels": 784, "max_pixels": 3136}  # fmt: skip
QUESTION = "When is the beep?"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(vidtempo checkpoint dir, export dir): adapters and merger weights changed from their start."""
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_video_llm(NODE).eval()
    with torch.no_grad():  # as after training: non-zero adapters (a fresh lora_B is 0) and a moved merger
        for name, param in model.named_parameters():
            if "lora_B" in name or "merger" in name:
                param.add_(torch.randn_like(param) * 0.1)
    assert model.has_lora and model.base_modified
    assert any("visual.blocks" in n and "lora_B" in n for n, _ in model.named_parameters())
    save_pretrained(model, root / "ckpt", model_config=NODE, tokenizer=tiny_qwen2_5_vl_tokenizer())
    assert main(["export", "--checkpoint", str(root / "ckpt"), "--out", str(root / "hf")]) == 0
    return root / "ckpt", root / "hf"


def _batch(tok, video_dir, n: int):
    convs = [ConversationSample(video=str(video_dir / f"v{i}.mp4"),
                                messages=[{"role": "user", "content": f"<video>\n{QUESTION}" + " Answer." * i}])
             for i in range(n)]  # fmt: skip
    return VideoCollator(tok, num_frames=4, frame_size=56, generation=True)(convs)


def _vidtempo(ckpt):
    from vidtempo.models.checkpoint import load_pretrained

    model, tok, _ = load_pretrained(ckpt)
    assert model.has_lora  # vidtempo's side runs the adapter unmerged
    return model.eval(), tok


def test_export_directory_is_a_plain_hf_model(exported):
    from safetensors import safe_open

    _, hf_dir = exported
    names = {p.name for p in hf_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "processor_config.json", "preprocessor_config.json",
            "video_preprocessor_config.json"} <= names  # fmt: skip
    config = json.loads((hf_dir / "config.json").read_text())
    assert (
        config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
        and config["model_type"] == "qwen2_5_vl"
    )
    assert config["text_config"]["rope_scaling"] == {"type": "mrope", "mrope_section": [2, 3, 3]}
    assert config["hidden_size"] == 64 and config["video_token_id"] == 516  # pre-5.0 readers: flat text keys
    with safe_open(str(hf_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert not any("lora_" in k or "base_layer" in k for k in keys)  # merged, peft names gone
    assert {
        "lm_head.weight",
        "model.embed_tokens.weight",
        "visual.merger.mlp.0.weight",
    } <= keys  # released layout
    legacy = json.loads((hf_dir / "video_preprocessor_config.json").read_text())
    assert (legacy["min_pixels"], legacy["max_pixels"]) == (784, 3136)  # the model's per-frame bounds
    marker = json.loads((hf_dir / "COMPLETE").read_text())
    assert marker["lora_merged"] is True


def test_transformers_logits_equal_vidtempo_logits(exported, video_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    ckpt, hf_dir = exported
    model, tok = _vidtempo(ckpt)
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert not any("lora_" in n for n, _ in hf.named_parameters())
    batch = _batch(tok, video_dir, 2)  # two rows of different lengths: padding + per-video grids
    args = batch.model_inputs(with_labels=False)
    inputs = model.prepare_inputs(args["input_ids"], args["attention_mask"], None, args["video"])
    with torch.no_grad():
        ours = model(**args)
        theirs = hf(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"],
                    second_per_grid_ts=inputs["second_per_grid_ts"], mm_token_type_ids=inputs["mm_token_type_ids"])  # fmt: skip
        with model.llm.model.disable_adapter():  # the adapters matter: without them the logits differ
            no_lora = model(**args).logits
    mask = ours.attention_mask.bool()
    assert torch.equal(ours.attention_mask, inputs["attention_mask"])
    torch.testing.assert_close(theirs.logits[mask], ours.logits[mask], atol=1e-5, rtol=0)
    assert (no_lora[mask] - ours.logits[mask]).abs().max() > 1e-2


def test_exported_processor_and_chat_template_reproduce_vidtempo_inputs(exported, video_dir):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    ckpt, hf_dir = exported
    model, tok = _vidtempo(ckpt)
    batch = _batch(tok, video_dir, 1)
    args = batch.model_inputs(with_labels=False)
    ours_inputs = model.prepare_inputs(args["input_ids"], args["attention_mask"], None, args["video"])
    processor = AutoProcessor.from_pretrained(hf_dir)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    frames = batch.frames[0]  # (T, 3, 56, 56) uint8: the decoded frames as the collator sends them
    assert frames.dtype == torch.uint8
    times = batch.timestamps[0].tolist()
    theirs_inputs = processor(text=[text], videos=[frames], return_tensors="pt")
    step = (times[-1] - times[0]) / (len(times) - 1)  # as docs/export.md: MRoPE time = 2 x mean frame spacing
    theirs_inputs["second_per_grid_ts"] = torch.tensor([2 * step])
    assert torch.equal(theirs_inputs["input_ids"], ours_inputs["input_ids"])
    assert torch.equal(theirs_inputs["video_grid_thw"], ours_inputs["video_grid_thw"])
    torch.testing.assert_close(
        theirs_inputs["second_per_grid_ts"].float(), ours_inputs["second_per_grid_ts"].float()
    )
    torch.testing.assert_close(theirs_inputs["pixel_values_videos"], ours_inputs["pixel_values_videos"],
                               atol=1e-5, rtol=0)  # fmt: skip
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(**theirs_inputs).logits
        ours = model(**args).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    new = hf.generate(**theirs_inputs, max_new_tokens=3, do_sample=False)[
        :, theirs_inputs["input_ids"].shape[1] :
    ]
    assert torch.equal(new, model.generate(**args, max_new_tokens=3))


def test_export_dtype_bfloat16(tmp_path):
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from vidtempo.models.native.export import export_hf
    from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl

    torch.manual_seed(0)
    model = Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), min_pixels=784)
    ref = {k: v.to(torch.bfloat16) for k, v in model.hf.state_dict().items()}
    export_hf(model, tiny_qwen2_5_vl_tokenizer(), tmp_path / "bf16", dtype="bfloat16")
    assert AutoConfig.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16
    loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "bf16", dtype="auto").state_dict()
    assert all(v.dtype == torch.bfloat16 and torch.equal(v, ref[k]) for k, v in loaded.items())
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_hf(model, tiny_qwen2_5_vl_tokenizer(), tmp_path / "x", dtype="int8")


def test_export_refuses_other_models_missing_dirs_and_occupied_out(tmp_path, capsys):
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained
    from vidtempo.models.tokenizers import tiny_tokenizer

    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}  # fmt: skip
    save_pretrained(
        build_video_llm(node), tmp_path / "composed", model_config=node, tokenizer=tiny_tokenizer()
    )
    assert main(["export", "--checkpoint", str(tmp_path / "composed"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert (
        "VideoLLM" in err
        and "supports native Qwen2.5-VL checkpoints only" in err
        and "Qwen25VLVideoModel" in err
    )
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err.splitlines()[0]
    assert not (tmp_path / "o").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    assert main(["export", "--checkpoint", str(tmp_path / "composed"), "--out", str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "keep.txt").is_file()
