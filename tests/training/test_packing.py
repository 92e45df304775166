"""#27 item 5: padding-free packing. Packed rows give the unpacked loss and gradients (VideoLLM with the pool and
the TDC compressors, the native Qwen2.5-VL with its 3-D mRoPE positions; tiny real models, fp32), samples in a
row never see each other, token-budget batches, the recipe checks that name their key, and the tiny recipe
trains packed end to end."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from vidtempo.config.errors import RecipeError
from vidtempo.data.packing import PackingCollator, TokenBudgetBatchSampler, sample_lengths
from vidtempo.models.interfaces import VideoInputs
from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl
from vidtempo.models.packed_attention import block_causal_mask, packed_forward, plan_rows, varlen_available
from vidtempo.training.schema import check_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_vectorised_forward import _batch, _pool_model, _tdc_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _loss_and_grads(model, batch: dict, **kw) -> tuple[torch.Tensor, dict[str, torch.Tensor], object]:
    model.zero_grad()
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["video"], return_hidden=True, **kw)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, out


def _assert_same(model, batch: dict, max_tokens: int) -> None:
    loss, grads, out = _loss_and_grads(model, batch)
    packed_loss, packed_grads, packed = _loss_and_grads(model, batch, packing=max_tokens)
    rows = packed.info["packed_rows"]
    assert 1 <= rows < len(batch["input_ids"]), f"{rows} rows: nothing was packed together"
    assert abs(packed_loss.item() - loss.item()) < 1e-5, (packed_loss.item(), loss.item())
    assert packed_grads.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    valid = out.attention_mask.bool()
    torch.testing.assert_close(packed.logits[valid], out.logits[valid], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(packed.last_hidden_state[valid], out.last_hidden_state[valid], rtol=1e-4, atol=1e-5)
    assert packed.logits.shape == out.logits.shape and torch.equal(packed.labels, out.labels)


@pytest.mark.parametrize("build, audio, max_tokens", [(_pool_model, True, 64), (_tdc_model, False, 160)],
                         ids=["pool_audio", "tdc"])  # fmt: skip
def test_video_llm_packed_loss_and_gradients_equal_unpacked(build, audio, max_tokens):
    _assert_same(build().eval(), _batch(5, audio), max_tokens)  # eval: no dropout draws (the Q-Former has some)


def _qwen_batch() -> dict:
    gen = torch.Generator().manual_seed(1)
    b, t, length = 4, 6, 9
    frame_mask = torch.arange(t)[None] < torch.tensor([6, 2, 4, 3])[:, None]
    video = VideoInputs(frames=torch.rand(b, t, 3, 56, 56, generator=gen), frame_mask=frame_mask,
                        timestamps=(torch.arange(t).float() + 0.5).expand(b, t) * frame_mask)  # fmt: skip
    ids = torch.randint(5, 400, (b, length), generator=gen)
    mask = (torch.arange(length)[None] < torch.tensor([9, 5, 7, 6])[:, None]).long()
    for i in range(b):
        ids[i, 1 + i % 3] = -200
    labels = torch.where(torch.arange(length)[None] >= 3, ids.clamp(min=0), -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "video": video}


def test_native_qwen25vl_packed_loss_and_gradients_equal_unpacked():
    """Each sample keeps its own 3-D mRoPE positions (video tokens: time, height, width) inside a packed row."""
    torch.manual_seed(0)
    model = Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), min_pixels=784, max_pixels=3136,
                               trainable={"vision_encoder": True, "projector": True, "llm": True}).train()  # fmt: skip
    _assert_same(model, _qwen_batch(), 48)


def test_the_varlen_layout_one_row_restarting_positions_gives_the_same_loss():
    """The GPU path's layout (every sample in one unpadded row, position ids restarting per sample,
    ``cu_seq_lens`` handed over) run on CPU: transformers derives the block-causal mask from the position ids
    there, FlashAttention reads ``cu_seq_lens`` on a GPU (not run on a GPU yet)."""
    model = _pool_model().train()
    batch = _batch(4, audio=True)
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["video"])
    tokens = model.encode_video(batch["video"])
    embeds, mask, labels, _ = model.splice(batch["input_ids"], batch["attention_mask"], tokens, batch["labels"])
    one_row = packed_forward(model.llm, embeds, mask, labels, 64, varlen=True)
    assert len(one_row.plan.rows) == 1 and one_row.plan.width == int(mask.sum())
    assert abs(one_row.loss.item() - out.loss.item()) < 1e-5
    assert not varlen_available(torch.device("cpu"), "flash_attention_2")


def test_samples_in_a_row_never_see_each_other():
    model = _pool_model().eval()
    batch = _batch(4, audio=False)
    tokens = model.encode_video(VideoInputs(**{**batch["video"].__dict__, "audio": None, "audio_lengths": None}))
    embeds, mask, labels, _ = model.splice(batch["input_ids"], batch["attention_mask"], tokens, batch["labels"])
    with torch.no_grad():
        first = packed_forward(model.llm, embeds, mask, labels, 256)
        other = embeds.clone()
        other[1:] = torch.randn_like(other[1:])  # every other sample changes
        second = packed_forward(model.llm, other, mask, labels, 256)
    assert len(first.plan.rows) == 1  # all four in one row
    n = int(mask[0].sum())
    torch.testing.assert_close(second.logits[0, :n], first.logits[0, :n], rtol=0, atol=1e-6)
    seq = torch.tensor([[0, 0, 1, -1]])
    allowed = block_causal_mask(seq, torch.float32)[0, 0] == 0
    assert allowed.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_row_plan_and_token_budget_batches():
    plan = plan_rows([4, 7, 2, 3], max_tokens=8)
    assert sorted(i for r in plan.rows for i in r) == [0, 1, 2, 3] and plan.width <= 8
    with pytest.raises(ValueError, match=r"sample 1 has 7 tokens .* data.packing.max_tokens=6"):
        plan_rows([4, 7], max_tokens=6)
    lengths = [int(x) for x in torch.randint(10, 120, (200,), generator=torch.Generator().manual_seed(0))]
    sampler = TokenBudgetBatchSampler(lengths, 256, seed=3)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(200))  # every item once
    assert all(sum(lengths[i] for i in b) <= 256 for b in first)
    assert sum(lengths) / (256 * len(first)) > 0.9  # first-fit decreasing fills the budget
    sampler.set_epoch(1)
    assert list(sampler) != first and len(sampler) == len(list(sampler))
    ranks = [list(TokenBudgetBatchSampler(lengths, 256, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
    with pytest.raises(ValueError, match=r"data.packing.max_tokens=100 is smaller than item"):
        TokenBudgetBatchSampler(lengths, 100)


def test_bad_packing_settings_name_their_key(tmp_path):
    from vidtempo.data.collate import VideoCollator
    from vidtempo.models.tokenizers import tiny_tokenizer
    from vidtempo.training.build import build_datamodule

    for bad, key in (({"max_tokens": 0}, "data.packing.max_tokens"), ({"max_tokens": "lots"}, "data.packing.max_tokens"),
                     ({"max_token": 64}, "data.packing.max_token")):  # fmt: skip
        with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
            check_data({"packing": bad}, "data", "r.yaml")
    from omegaconf import OmegaConf

    from vidtempo.config.load import load_recipe, resolve_recipe
    from vidtempo.training.schema import validate_recipe

    cfg = load_recipe(ROOT / "recipes/tiny/sft_pool.yaml", ["+data.packing.max_tokens=512"])  # max_length 1024
    with pytest.raises(RecipeError, match=r"key 'data.packing.max_tokens': 512 is below model.max_length=1024"):
        validate_recipe(OmegaConf.to_container(resolve_recipe(cfg), resolve=True), "r.yaml")
    data = {"train": {"_target_": "synth", "root": str(tmp_path / "synth"), "split": "train", "num_videos": 2,
                      "max_duration": 6, "tasks": ["grounding"]},
            "collator": {"num_frames": 4, "frame_size": 32, "max_length": 256, "video_tokens": 16}}  # fmt: skip
    tok = tiny_tokenizer()
    with pytest.raises(RecipeError, match=r"key 'data.packing.max_tokens'.*below model.max_length=256"):
        build_datamodule({**data, "packing": {"max_tokens": 128}}, tok, "r.yaml")
    with pytest.raises(RecipeError, match=r"key 'data.packing'.*group_by_video"):
        build_datamodule({**data, "packing": {"max_tokens": 512}, "group_by_video": 2}, tok, "r.yaml")
    module = build_datamodule({**data, "packing": {"max_tokens": 512}}, tok, "r.yaml")
    assert isinstance(module.collator, PackingCollator) and isinstance(module.collator.collator, VideoCollator)
    lengths = sample_lengths(module.train_set, module.collator.collator)
    assert all(n > 16 for n in lengths)  # text + the 16 video tokens of each clip
    small = VideoCollator(tok, num_frames=4, frame_size=32, max_length=20, video_tokens=16)  # data.overlong: error
    with pytest.raises(ValueError, match=r"record .* over-long|longer than|exceed"):
        sample_lengths(module.train_set, small)


def test_tiny_recipe_trains_packed(tmp_path):
    from vidtempo.config.load import load_recipe
    from vidtempo.training.run import train

    cfg = load_recipe(ROOT / "recipes/tiny/sft_pool_packed.yaml",
                      [f"output_dir={tmp_path / 'run'}", "trainer.max_steps=2", "trainer.log_every_n_steps=1",
                       f"data.train.root={tmp_path / 'synth'}", "data.train.num_videos=6", "~data.val",
                       "~trainer.val_check_interval"])  # fmt: skip
    final = train(cfg)
    rows = list(csv.DictReader((final.parent / "logs" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)


@pytest.mark.slow
def test_the_benchmark_smoke_run_ends_with_result_lines():
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "packing.py"), "--smoke"], capture_output=True,
                         text=True, env=env, cwd=ROOT / "benchmarks", check=True).stdout  # fmt: skip
    results = [line for line in out.splitlines() if line.startswith("RESULT case=")]
    assert len(results) == 2 and all("ratio=" in line and "loss_diff=" in line for line in results)


def test_a_model_without_the_packing_capability_is_refused_naming_the_key():
    from vidtempo.models.video_llm import VideoLLM
    from vidtempo.training.build import build_objective

    class UnpackedVideoLLM(VideoLLM):  # a user's model that does not take forward(packing=N)
        @property
        def capabilities(self) -> frozenset[str]:  # type: ignore[override]
            return super().capabilities - {"packing"}

    model = _pool_model()
    model.__class__ = UnpackedVideoLLM
    stage = {"objective": {"_target_": "sft"}, "optim": {}, "data": {"packing": {"max_tokens": 512}}}
    with pytest.raises(RecipeError, match=r"key 'data.packing'.*UnpackedVideoLLM does not declare the 'packing'"):
        build_objective(stage, model, "r.yaml", "")
    stage["data"] = {}
    assert build_objective(stage, model, "r.yaml", "") is not None
