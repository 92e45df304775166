"""``base_modified`` follows what trains, not the plan a model was built with: a recipe whose ``model.trainable``
says ``llm: true`` but whose stages all train LoRA saves adapter-only checkpoints; a stage that trains the LLM's own
weights makes every later save full (the LoRA stage after it included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidtempo.config.load import load_recipe
from vidtempo.models.interfaces import TrainableParts
from vidtempo.models.llms.presets import tiny_llm
from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl
from vidtempo.training.run import train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def base_llm(tmp_path_factory) -> Path:
    """A "pretrained" tiny LLM on disk: the source an adapter-only checkpoint reloads its base from."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base") / "llm"
    tiny_llm().model.save_pretrained(path)
    return path


def _cfg(video_dir: Path, base_llm: Path, out: Path, stages: list[dict]):
    cfg = load_recipe(RECIPE, [f"output_dir={out}", "~data.val", "trainer.val_check_interval=null",
                               "trainer.max_steps=1", "data.batch_size=2"])  # fmt: skip
    cfg.data.train = {"_target_": "conversation", "path": str(video_dir / "train.jsonl"), "video_root": str(video_dir)}
    cfg.model.llm = {"_target_": "hf_causal_lm", "name_or_path": str(base_llm)}
    cfg.model.lora = LORA
    cfg.weights = {"llm": None}
    assert cfg.model.trainable.llm is True  # the recipe's construction-time plan trains the LLM
    cfg.stages = stages
    return cfg


def _saved(final: Path) -> tuple[bool, list[str]]:
    config = json.loads((final / "vidtempo.json").read_text())
    base = [k for k in load_file(str(final / "model.safetensors")) if k.startswith("llm.") and "lora_" not in k]
    return bool(config["adapter_only"]), base


def test_lora_only_stages_save_adapter_only_despite_a_full_model_plan(video_dir, base_llm, tmp_path):
    lora = {"name": "lora", "trainable": {"vision_encoder": False, "compressor": True, "projector": True,
                                          "llm": "lora"}}  # fmt: skip
    final = train(_cfg(video_dir, base_llm, tmp_path / "run", [lora]))
    adapter_only, base_keys = _saved(final)
    assert adapter_only and not base_keys


def test_a_stage_that_trains_the_llm_makes_later_saves_full(video_dir, base_llm, tmp_path):
    full = {"name": "full", "trainable": {"llm": True}}
    lora = {"name": "lora", "trainable": {"llm": "lora"}}
    final = train(_cfg(video_dir, base_llm, tmp_path / "run", [full, lora]))
    adapter_only, base_keys = _saved(final)
    assert not adapter_only and base_keys


def test_construction_plan_alone_does_not_mark_the_native_model():
    torch.manual_seed(0)
    model = Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), trainable={"llm": True}, lora=LORA, min_pixels=784)
    assert model.base_modified  # the current plan trains base weights
    lora_only = TrainableParts(vision_encoder=False, projector=False, llm="lora")
    model.set_trainable(lora_only)  # what a LoRA stage applies
    assert model.has_lora and not model.base_modified
    assert model.trains_base(TrainableParts(llm="lora", projector=True))  # the merger lives under llm.
    model.base_modified = True  # as run.train marks a stage that trained base weights
    model.set_trainable(lora_only)
    assert model.base_modified
