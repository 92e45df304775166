"""Curriculum expansion (level order, per-level data, pre/post-SFT), TempoSynth pairs, and a tiny
``vidtempo dpo --curriculum`` run: merge + fresh adapter + reference refresh per level, and resume mid-run."""

from __future__ import annotations

import argparse
import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vidtempo.config.errors import RecipeError
from vidtempo.data.perturb import perturb_indices
from vidtempo.data.samples import PreferenceSample
from vidtempo.synth.pairs import SynthPreferencePairs
from vidtempo.training.curriculum import MagnitudeFilter, expand_curriculum
from vidtempo.training.manifest import RecipeChangedError

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "tempo_synth.yaml"
PAIRS = {"_target_": "preference", "path": "pairs.jsonl"}


def recipe(**curriculum) -> dict:
    return {"model": {}, "data": {"train": {"_target_": "synth"}, "val": {"_target_": "synth"}},
            "trainer": {"max_steps": 7}, "dpo": {"data": {"train": PAIRS}, "trainable": {"projector": True}},
            "curriculum": curriculum}  # fmt: skip


def names(cfg: dict) -> list[str]:
    return [s["name"] for s in cfg["stages"]]


def test_levels_run_easy_to_hard_each_on_its_own_magnitude():
    cfg = expand_curriculum(recipe(switch="steps", per_level=[5, 5, 6, 7]), pre_sft=True)
    assert names(cfg) == ["dpo_m16", "dpo_m8", "dpo_m4", "dpo_m2", "sft"]
    assert "dpo" not in cfg and "curriculum" not in cfg
    dpo = cfg["stages"][:4]
    assert [s["data"]["train"]["magnitudes"] for s in dpo] == [[16], [8], [4], [2]]
    assert all(s["data"]["train"]["dataset"] == PAIRS and s["data"]["val"] is None for s in dpo)
    assert [s["trainer"]["max_steps"] for s in dpo] == [5, 5, 6, 7]
    assert all(s["objective"]["_target_"] == "dpo" and s["merge_lora_after"] for s in dpo)
    assert dpo[0]["trainable"] == {"vision_encoder": False, "audio_encoder": False, "compressor": False,
                                   "projector": True, "llm": "lora"}  # fmt: skip
    assert cfg["stages"][4] == {"name": "sft"}  # the recipe's own top-level sections


def test_orders_switches_and_single_stage_compute():
    as_listed = expand_curriculum(recipe(levels=[2, 16, 8], order="as_listed"))
    assert names(as_listed) == ["sft", "dpo_m2", "dpo_m16", "dpo_m8"]  # post-SFT by default
    assert as_listed["stages"][1]["trainer"] == {
        "max_epochs": 1,
        "max_steps": -1,
        "limit_val_batches": 0,
        "val_check_interval": None,
        "num_sanity_val_steps": 0,
    }
    assert names(expand_curriculum(recipe(order="hard_to_easy", with_sft=False))) == [
        "dpo_m2", "dpo_m4", "dpo_m8", "dpo_m16"]  # fmt: skip
    single = expand_curriculum(recipe(switch="steps", per_level=3, merge_lora_after=False), curriculum=False)
    (stage,) = [s for s in single["stages"] if s["name"] == "dpo"]
    assert stage["trainer"]["max_steps"] == 12 and stage["data"]["train"]["magnitudes"] == [16, 8, 4, 2]
    assert not stage["merge_lora_after"]


def test_pre_and_post_sft_wrap_the_recipes_own_stages():
    cfg = recipe()
    cfg["stages"] = [{"name": "align"}, {"name": "finetune", "trainable": {"llm": "lora"}}]
    assert names(expand_curriculum(cfg, pre_sft=True, curriculum=False)) == ["dpo", "align", "finetune"]
    assert names(expand_curriculum(cfg, pre_sft=False, curriculum=False)) == ["align", "finetune", "dpo"]
    cfg["curriculum"] = {"pre_sft": True}  # the recipe's choice, unless the command line says otherwise
    assert names(expand_curriculum(cfg, curriculum=False)) == ["dpo", "align", "finetune"]


def test_bad_curriculum_sections_name_the_key():
    with pytest.raises(RecipeError, match="curriculum.levles"):
        expand_curriculum(recipe(levles=[16]))
    with pytest.raises(RecipeError, match="curriculum.per_level.*3 values for 4 levels"):
        expand_curriculum(recipe(per_level=[1, 2, 3]))
    with pytest.raises(RecipeError, match="curriculum.order"):
        expand_curriculum(recipe(order="random"))
    with pytest.raises(RecipeError, match="dpo.data.train"):
        expand_curriculum({"dpo": {"data": {}}})


def test_magnitude_filter_keeps_one_level_and_explains_misses():
    data = [
        PreferenceSample(None, [], "a", "b", id=str(i), meta={"magnitude": m})
        for i, m in enumerate([16, 2, 16, 4])
    ]
    level = MagnitudeFilter(data, [16])
    assert [s.id for s in level] == ["0", "2"] and level.counts == {2: 1, 4: 1, 16: 2}
    with pytest.raises(
        ValueError, match=r"no pair with magnitude in \[8\]; magnitudes present: \{2: 1, 4: 1, 16: 2\}"
    ):
        MagnitudeFilter(data, [8])
    data.append(PreferenceSample(None, [], "a", "b", id="x"))
    with pytest.raises(ValueError, match="sample 4 \\('x'\\) has no meta 'magnitude'"):
        MagnitudeFilter(data, [16])


def test_perturbations_follow_the_released_rules():
    rng = np.random.default_rng(0)
    assert perturb_indices(10, "reverse", 16, rng) == list(range(9, -1, -1))  # m >= n: full reversal
    assert perturb_indices(10, "reverse", 2, rng) == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    for _ in range(20):  # two blocks: the only non-identity shuffle is the swap (identity re-drawn)
        assert perturb_indices(10, "shuffle", 2, rng) == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    kept = perturb_indices(10, "drop", 4, rng)
    assert len(kept) == 2 and kept == sorted(kept)
    assert perturb_indices(1, "shuffle", 2, rng) is None


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from vidtempo.synth.generate import generate

    root = tmp_path_factory.mktemp("temposynth")
    generate(root, num_videos=6, seed=0, size=32, min_duration=6, max_duration=6, progress=False)
    return root


def test_synth_pairs_have_levels_and_perturbed_time_order(synth_root):
    pairs = SynthPreferencePairs(str(synth_root), split="train", limit=2)
    assert {p.meta["magnitude"] for p in pairs} == {16, 8, 4, 2}
    for p in pairs:
        chosen, rejected = p.chosen.splitlines(), p.rejected.splitlines()
        assert p.rejected_video is None and p.video.endswith(f"{p.meta['video_id']}.mp4")
        if p.meta["perturbation"] == "drop":
            assert len(rejected) == max(1, len(chosen) // p.meta["magnitude"]) and set(rejected) < set(chosen)
        else:  # same time stamps in the same slots, sentences in another order
            assert [r.split(", ")[0] for r in rejected] == [c.split(", ")[0] for c in chosen]
            assert sorted(rejected) != sorted(chosen) or rejected != chosen
    assert len(MagnitudeFilter(pairs, [2])) == len([p for p in pairs if p.meta["magnitude"] == 2]) > 0


def run_dpo(out: Path, synth_root: Path, *flags_and_overrides: str) -> int:
    from vidtempo.cli import dpo

    parser = argparse.ArgumentParser()
    dpo.add_arguments(parser)
    overrides = [
        f"output_dir={out}", "~data.val", "trainer.val_check_interval=null", "trainer.max_steps=1",
        "trainer.log_every_n_steps=1", "data.batch_size=1", "data.collator.num_frames=2",
        f"data.train.root={synth_root}", f"dpo.data.train.root={synth_root}", "+dpo.data.train.limit=1",
        "~dpo.data.val", "dpo.data.batch_size=1", "+dpo.trainer.log_every_n_steps=1",
        "dpo.checkpoint.every_n_steps=1", "curriculum.levels=[16,2]", "curriculum.with_sft=false",
    ]  # fmt: skip
    return dpo.run(parser.parse_args([str(RECIPE), *flags_and_overrides, *overrides]))


def metrics(stage_dir: Path) -> list[dict[str, str]]:
    with open(stage_dir / "logs" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def test_tiny_curriculum_run_merges_refreshes_and_resumes(synth_root, tmp_path):
    # DPO stages only (with_sft=false) to keep the test short; the SFT placement is covered above
    out = tmp_path / "run"
    assert run_dpo(out, synth_root, "--curriculum", "--pre-sft", "curriculum.per_level=1") == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["0_dpo_m16", "1_dpo_m2"]
    # every level starts with a fresh adapter on the merged previous level, which is also its reference:
    # policy == reference at its first step, so the preference loss is exactly log 2 and the margin 0
    for level in ("0_dpo_m16", "1_dpo_m2"):
        first = metrics(out / level)[0]
        assert first["step"] == "0" and math.isclose(
            float(first["train/loss/preference"]), math.log(2), abs_tol=1e-6
        )
        assert float(first["train/rewards/margins"]) == 0.0
    w0 = load_file(str(out / "0_dpo_m16" / "final" / "model.safetensors"))
    w1 = load_file(str(out / "1_dpo_m2" / "final" / "model.safetensors"))
    layer = "llm.model.base_model.model.model.layers.0.self_attn.q_proj"
    merged = (
        w0[f"{layer}.base_layer.weight"]
        + 2.0 * w0[f"{layer}.lora_B.default.weight"] @ w0[f"{layer}.lora_A.default.weight"]
    )
    torch.testing.assert_close(w1[f"{layer}.base_layer.weight"], merged)  # level 1 started from the merge
    assert not torch.equal(w1[f"{layer}.lora_A.default.weight"], w0[f"{layer}.lora_A.default.weight"])
    assert not torch.equal(w0[f"{layer}.base_layer.weight"], merged)  # the adapter did learn something

    # interrupt inside level 1 (after its step-1 checkpoint), then run the same command with longer levels
    stamp = (out / "0_dpo_m16" / "final" / "model.safetensors").stat().st_mtime_ns
    shutil.rmtree(out / "1_dpo_m2" / "final")
    longer = ("--curriculum", "--pre-sft", "curriculum.per_level=2")
    with pytest.raises(RecipeChangedError, match="stage dpo_m2: trainer.max_steps: 1 -> 2"):
        run_dpo(out, synth_root, *longer)  # other settings than the started stages had: refused
    assert run_dpo(out, synth_root, *longer, "--allow-changed-recipe") == 0
    assert (out / "0_dpo_m16" / "final" / "model.safetensors").stat().st_mtime_ns == stamp  # not retrained
    assert len(metrics(out / "0_dpo_m16")) == 1
    steps = [int(r["step"]) for r in metrics(out / "1_dpo_m2")]
    assert steps == [0, 1]  # continued at step 1, not restarted at 0; the first run's row survives the resume
    ckpt = torch.load(out / "1_dpo_m2" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and (out / "1_dpo_m2" / "final" / "model.safetensors").is_file()


def test_cli_flags_may_follow_the_recipe_and_overrides(capsys):
    from vidtempo.cli import dpo

    parser = argparse.ArgumentParser()
    dpo.add_arguments(parser)
    argv = [str(RECIPE), "--curriculum", "curriculum.per_level=3", "--pre-sft", "--dry-run"]
    assert dpo.run(parser.parse_args(argv)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["0_dpo_m16", "1_dpo_m8", "2_dpo_m4", "3_dpo_m2", "4_sft"]
    assert "3 steps" in lines[0] and "merge_lora_after" in lines[0]
    with pytest.raises(SystemExit):
        dpo.run(parser.parse_args([str(RECIPE), "--pre-sft", "--post-sft", "--dry-run"]))
