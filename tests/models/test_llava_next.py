"""LLaVA-v1.6-Mistral-7B as the LLM: the language model of a tiny LLaVA-NeXT checkpoint (built and saved by the
test, offline) loads into the LLM wrapper in both weight layouts and gives the checkpoint's own logits; bad
directories fail with one-line errors; the [INST] chat template labels the answer only; the named preset builds
offline with the public sizes (about 7.2 B parameters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidtempo.models.llms.llava_next import (
    LLAVA_V16_MISTRAL_7B,
    LlavaNextLanguageModel,
    llava_next_tokenizer,
    llava_v1_6_mistral_7b,
)

TEXT = {"model_type": "mistral", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "sliding_window": None, "tie_word_embeddings": False}  # fmt: skip
VISION = {"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
          "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 16}  # fmt: skip


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    from vidtempo.models.tokenizers import tiny_tokenizer

    torch.manual_seed(0)
    cfg = LlavaNextConfig(text_config=TEXT, vision_config=VISION, image_token_index=500,
                          image_grid_pinpoints=[[32, 32]])  # fmt: skip
    model = LlavaNextForConditionalGeneration(cfg).eval()
    out = tmp_path_factory.mktemp("llava_next")
    model.save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out, model


def _reference_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_the_language_model_loads_and_matches_the_checkpoint(llava_dir):
    path, reference = llava_dir
    llm = LlavaNextLanguageModel(str(path)).eval()  # config read from the directory's text_config
    assert llm.config.model_type == "mistral" and llm.hidden_size == 64
    llm.load_pretrained()
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.no_grad():
        got = llm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(got, _reference_logits(reference, ids))


def test_the_in_memory_layout_loads_too(llava_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    path, reference = llava_dir
    renamed = {}
    for key, value in load_file(str(path / "model.safetensors")).items():
        key = key.replace("language_model.model.", "model.language_model.").replace(
            "language_model.lm_head.", "lm_head."
        )
        renamed[key] = value.contiguous()
    save_file(renamed, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    llm = LlavaNextLanguageModel(str(tmp_path), config=TEXT).eval()
    llm.load_pretrained()
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        got = llm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(got, _reference_logits(reference, ids))


def test_bad_directories_fail_with_one_line_errors(llava_dir, tmp_path):
    path, _ = llava_dir
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LlavaNextLanguageModel(str(tmp_path / "nowhere"))
    wrong = LlavaNextLanguageModel(str(path), config={**TEXT, "hidden_size": 32, "intermediate_size": 64})
    with pytest.raises(
        ValueError, match="text_config.hidden_size=64 but the LLM was built with hidden_size=32"
    ):
        wrong.load_pretrained()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": TEXT}))
    with pytest.raises(ValueError, match="expected 'llava_next'"):
        LlavaNextLanguageModel(str(tmp_path))


def test_the_chat_template_labels_only_the_answer(llava_dir):
    from vidtempo.data.chat import IGNORE_INDEX, ChatEncoder

    path, _ = llava_dir
    tok = llava_next_tokenizer(str(path))
    messages = [{"role": "user", "content": "<video>\nWhen is the red circle visible?"},
                {"role": "assistant", "content": "1.0 - 2.0 seconds"}]  # fmt: skip
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text.startswith("[INST] <video>\nWhen is the red circle visible? [/INST] 1.0 - 2.0 seconds")
    with_system = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *messages], tokenize=False
    )
    assert "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<video>" in with_system
    ids, labels = ChatEncoder(tok).encode(messages)
    answer = [t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    assert tok.decode(answer).strip().startswith("1.0 - 2.0 seconds")
    assert "INST" not in tok.decode(answer)


def test_the_named_preset_builds_offline_with_the_public_sizes():
    llm = llava_v1_6_mistral_7b(meta=True)
    total = sum(p.numel() for p in llm.parameters())
    assert 7.1e9 < total < 7.3e9, total  # Mistral-7B with a 32064-row vocabulary: about 7.24 B
    assert llm.name_or_path == "llava-hf/llava-v1.6-mistral-7b-hf" and llm.config.vocab_size == 32064
    assert LLAVA_V16_MISTRAL_7B["num_key_value_heads"] == 8
