"""VideoLLM on tiny Qwen2 / Mistral / Llama: forward, backward, generate, LoRA, save/load."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vidtempo.data.chat import ChatEncoder
from vidtempo.models.build import build_video_llm
from vidtempo.models.checkpoint import load_pretrained, save_pretrained
from vidtempo.models.interfaces import VideoInputs
from vidtempo.models.video_llm import IGNORE_INDEX, VIDEO_TOKEN_INDEX


def node(arch: str = "qwen2", **extra) -> dict:
    return {
        "_target_": "vidtempo.models.VideoLLM",
        "vision_encoder": {"_target_": "tiny"},
        "compressor": {"_target_": "pool", "in_dim": 32, "stride": 2},
        "llm": {"_target_": "tiny", "arch": arch},
        **extra,
    }


def batch(tokenizer, n: int = 2, frames: int = 3) -> dict:
    enc = ChatEncoder(tokenizer)
    rows = [
        enc.encode([{"role": "user", "content": "<video>\nWhen is the red circle visible?"},
                    {"role": "assistant", "content": f"{i}.5 - {i + 2}.0 seconds"}])
        for i in range(n)
    ]
    longest = max(len(r[0]) for r in rows)
    ids = torch.full((n, longest), tokenizer.pad_token_id)
    labels = torch.full((n, longest), IGNORE_INDEX)
    mask = torch.zeros(n, longest, dtype=torch.long)
    for i, (r_ids, r_lab) in enumerate(rows):
        ids[i, : len(r_ids)], labels[i, : len(r_lab)], mask[i, : len(r_ids)] = torch.tensor(r_ids), torch.tensor(r_lab), 1
    frame_mask = torch.ones(n, frames, dtype=torch.bool)
    frame_mask[-1, -1] = False  # a padded frame in the last row
    video = VideoInputs(frames=torch.rand(n, frames, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                        frame_mask=frame_mask, timestamps=torch.arange(frames).float().expand(n, frames) + 0.5)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "video": video}


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "llama"])
def test_forward_backward_generate(arch: str, tokenizer):
    torch.manual_seed(0)
    model = build_video_llm(node(arch, trainable={"llm": True}))
    b = batch(tokenizer)
    out = model(**b)
    assert out.loss.isfinite()
    # video tokens: 3 frames x 4 pooled tokens, one padded frame in the last row
    assert out.num_video_tokens.tolist() == [12, 8]
    assert out.logits.shape[:2] == out.labels.shape == out.attention_mask.shape
    out.loss.backward()
    assert model.compressor.time_scale.grad is not None and model.projector.net[0].weight.grad is not None
    assert model.vision_encoder.tower.embeddings.patch_embedding.weight.grad is None  # frozen by default
    gen_inputs = {k: v for k, v in b.items() if k != "labels"}
    new = model.generate(**gen_inputs, max_new_tokens=5, pad_token_id=tokenizer.pad_token_id)
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 5


def test_labels_mask_everything_but_assistant_turns(tokenizer):
    enc = ChatEncoder(tokenizer, system_prompt="You are a helpful assistant.")
    ids, labels = enc.encode([{"role": "user", "content": "When?"}, {"role": "assistant", "content": "1.0 - 2.0 seconds"},
                              {"role": "user", "content": "And?"}, {"role": "assistant", "content": "none"}])
    assert ids.count(VIDEO_TOKEN_INDEX) == 1  # placeholder added to the first user turn
    target = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    assert target == "1.0 - 2.0 seconds<|im_end|>\nnone<|im_end|>\n"


def test_chat_encoder_remembers_conversations_without_sharing_lists(tokenizer, monkeypatch):
    enc = ChatEncoder(tokenizer, max_text_tokens=64)
    turns = [{"role": "user", "content": "When is the red circle visible?"},
             {"role": "assistant", "content": "1.0 - 2.0 seconds"}]  # fmt: skip
    first = enc.encode(turns)
    prompt = enc.encode(turns[:1], generation_prompt=True)
    calls = []
    monkeypatch.setattr(enc, "_encode", lambda *a: calls.append(a))  # a second tokenisation would record here
    again = enc.encode([dict(t) for t in turns])
    assert again == first and not calls
    again[0].append(0)  # the caller's copy, not the remembered one
    assert enc.encode(turns) == first and enc.encode(turns[:1], generation_prompt=True) == prompt
    assert prompt[0] != first[0]  # the generation prompt is part of the key
    enc.max_text_tokens = 5  # the length check still applies to a remembered conversation
    with pytest.raises(ValueError, match="sample 's1'.*max_text_tokens=5"):
        enc.encode(turns, sample_id="s1")


def test_overlong_sequence_is_a_clear_error(tokenizer):
    model = build_video_llm(node(max_length=10))
    with pytest.raises(ValueError, match="exceed max_length=10"):
        model(**batch(tokenizer))


def test_dimension_mismatch_is_reported():
    with pytest.raises(ValueError, match="compressor in_dim=16"):
        build_video_llm({**node(), "compressor": {"_target_": "pool", "in_dim": 16}})


def test_lora_trains_only_adapters(tokenizer):
    torch.manual_seed(0)
    model = build_video_llm(node(trainable={"compressor": False, "projector": False, "llm": "lora"},
                                 lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        model(**batch(tokenizer)).loss.backward()
        opt.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == (name in trainable), name


def test_save_load_round_trip_is_exact(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = build_video_llm(node()).eval()
    b = batch(tokenizer)
    save_pretrained(model, tmp_path / "ckpt", model_config=node(), tokenizer=tokenizer)
    loaded, tok, _ = load_pretrained(tmp_path / "ckpt")
    assert tok is not None and tok("red circle")["input_ids"] == tokenizer("red circle")["input_ids"]
    torch.testing.assert_close(loaded.eval()(**b).logits, model(**b).logits, rtol=0, atol=0)


def test_lora_checkpoint_is_adapter_only_and_reloads_exactly(tmp_path, tokenizer):
    from vidtempo.models.llms.presets import tiny_llm

    torch.manual_seed(0)
    base_dir = tmp_path / "base_llm"
    tiny_llm().model.save_pretrained(base_dir)  # a "pretrained" LLM on disk, loaded through the real path
    cfg = node(trainable={"llm": "lora"}, lora={"r": 4, "alpha": 8})
    cfg["llm"] = {"_target_": "hf_causal_lm", "name_or_path": str(base_dir)}
    model = build_video_llm(cfg, weights={"llm": None}).eval()
    with torch.no_grad():  # make the adapter non-trivial
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    out_dir = save_pretrained(model, tmp_path / "ckpt", model_config=cfg)
    saved = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(out_dir / "model.safetensors"))
    assert not [k for k in saved if k.startswith("llm.") and "lora_" not in k]  # base LLM not stored
    assert (out_dir / "adapter" / "adapter_config.json").is_file()
    loaded, _, config = load_pretrained(out_dir)
    assert config["adapter_only"]
    b = batch(tokenizer)
    torch.testing.assert_close(loaded.eval()(**b).logits, model(**b).logits, rtol=0, atol=0)


def test_time_token_rows_train_under_lora_and_an_adapter_only_checkpoint_keeps_them(tmp_path):
    """tokenizer.time_tokens: the LLM grows rows for the new ids; under LoRA only those rows of the embeddings
    and LM head train (peft trainable_token_indices), and the adapter-only checkpoint reloads them exactly."""
    from vidtempo.models.llms.presets import tiny_llm
    from vidtempo.models.tokenizers import time_token_ids, tiny_tokenizer

    torch.manual_seed(0)
    tok = tiny_tokenizer(time_tokens=20)
    base_dir = tmp_path / "base_llm"
    tiny_llm().model.save_pretrained(base_dir)  # 512 rows: the 20 time tokens need a resize
    cfg = node(trainable={"llm": "lora"}, lora={"r": 4, "alpha": 8}, new_token_ids=time_token_ids(tok))
    cfg["llm"] = {"_target_": "hf_causal_lm", "name_or_path": str(base_dir)}
    model = build_video_llm(cfg, weights={"llm": None}).eval()
    assert model.llm.get_input_embeddings().weight.shape[0] == len(tok) == 532
    trainable = {n for n, p in model.llm.named_parameters() if p.requires_grad and "lora_" not in n}
    assert len(trainable) == 2 and all("trainable_tokens_delta" in n for n in trainable)  # embed + lm_head rows
    ids = torch.tensor([tok("from <t_3> to <t_17>")["input_ids"]])
    before = model.llm(input_ids=ids).logits
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "trainable_tokens_delta" in n or "lora_B" in n:
                p.normal_()
    after = model.llm(input_ids=ids).logits  # (1, L, 532)
    assert not torch.allclose(before, after)
    out_dir = save_pretrained(model, tmp_path / "ckpt", model_config=cfg, tokenizer=tok)
    loaded, loaded_tok, config = load_pretrained(out_dir)
    assert config["adapter_only"] and len(loaded_tok) == 532
    torch.testing.assert_close(loaded.eval().llm(input_ids=ids).logits, after, rtol=0, atol=0)


def test_the_answer_flows_from_the_video(video_dir, tokenizer):
    """Same question, different videos and answers: only the video can tell them apart. The model fits them
    with the video and stays at the text-only loss when the frames are blanked (the visual path carries
    information end to end: decoder -> encoder -> compressor -> projector -> LLM)."""
    from vidtempo.data.collate import VideoCollator
    from vidtempo.data.datasets import ConversationDataset

    torch.manual_seed(0)
    model = build_video_llm(node(trainable={"vision_encoder": True, "llm": True}))
    samples = ConversationDataset(video_dir / "train.jsonl", video_root=video_dir).samples
    batch = VideoCollator(tokenizer, num_frames=4, frame_size=32)(samples).model_inputs()
    blind = {**batch, "video": replace(batch["video"], frames=torch.zeros_like(batch["video"].frames))}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
    with torch.no_grad():
        seen, unseen = model(**batch).loss.item(), model(**blind).loss.item()
    assert seen < 0.05 and unseen > 10 * seen, (seen, unseen)


def test_video_position_after_text_puts_the_placeholder_after_the_question(tokenizer):
    messages = [{"role": "user", "content": "<video>\nWhen is the red circle visible?"},
                {"role": "assistant", "content": "1.0 - 2.0 seconds"}]
    keep, keep_labels = ChatEncoder(tokenizer).encode(messages)
    after, labels = ChatEncoder(tokenizer, video_position="after_text").encode(messages)
    question = tokenizer("When is the red circle visible?", add_special_tokens=False)["input_ids"]
    assert keep.index(VIDEO_TOKEN_INDEX) < after.index(VIDEO_TOKEN_INDEX)
    start = after.index(question[0])
    assert after[start : start + len(question)] == question and after.index(VIDEO_TOKEN_INDEX) > start
    assert sorted(keep) == sorted(after)  # same tokens, only the video moved
    assert [t for t in labels if t != IGNORE_INDEX] == [t for t in keep_labels if t != IGNORE_INDEX]
    with pytest.raises(ValueError, match="video_position"):
        ChatEncoder(tokenizer, video_position="middle")


def test_return_hidden_gives_the_final_states_aligned_with_the_logits(tokenizer):
    torch.manual_seed(0)
    model = build_video_llm(node()).eval()
    b = batch(tokenizer)
    plain, full = model(**b), model(**b, return_hidden=True)
    assert plain.last_hidden_state is None
    assert full.last_hidden_state.shape == (*full.logits.shape[:2], model.llm.hidden_size)
    assert torch.equal(full.logits, plain.logits) and torch.equal(full.loss, plain.loss)
    # the logits are the LM head applied to exactly these states
    head = model.llm.model.get_output_embeddings()
    torch.testing.assert_close(head(full.last_hidden_state), full.logits)


def test_a_stage_cannot_silently_change_the_settings_of_an_adapter_the_model_already_has():
    from vidtempo.models.lora import LoraSettings
    from vidtempo.training.run import _stage_lora

    model = build_video_llm(node(trainable={"llm": "lora"}))  # default adapter (r 8, dropout 0.05) at build
    assert _stage_lora(model, {}, "stages.1.lora") == LoraSettings()  # the same settings: accepted
    with pytest.raises(ValueError, match=r"stages.1.lora: the model already has a LoRA adapter"):
        _stage_lora(model, {"r": 4, "alpha": 8, "dropout": 0.0}, "stages.1.lora")
    fresh = build_video_llm(node())  # no adapter yet: the stage's settings are the ones it gets
    assert _stage_lora(fresh, {"r": 4}, "lora") == LoraSettings(r=4)
