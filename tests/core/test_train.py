"""End to end: `vidtempo train` on a tiny recipe (loss goes down, checkpoint + resolved recipe written,
resume, `infer` generates), user subclasses from YAML, stage chaining, skipped samples."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vidtempo.cli.main import main
from vidtempo.config.load import load_recipe
from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.training.run import train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"


class DoubledPool(SpatialPoolCompressor):
    """A user's subclass, defined in a test module and never registered."""

    built = 0

    def __init__(self, in_dim: int, gain: float = 2.0) -> None:
        super().__init__(in_dim, stride=4, time_embedding=True)
        self.gain = gain
        DoubledPool.built += 1

    def forward(self, inputs):
        out = super().forward(inputs)
        out.tokens = out.tokens * self.gain
        return out


def tiny_cfg(video_dir: Path, out: Path, *overrides: str):
    cfg = load_recipe(RECIPE, [f"output_dir={out}", "~data.val", "trainer.val_check_interval=null",
                               "trainer.log_every_n_steps=1", "data.batch_size=2", *overrides])
    cfg.data.train = {"_target_": "conversation", "path": str(video_dir / "train.jsonl"), "video_root": str(video_dir)}
    return cfg


def losses(stage_dir: Path) -> list[float]:
    with open(stage_dir / "logs" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_train_loss_goes_down_writes_checkpoint_recipe_and_infers(video_dir, tmp_path, capsys):
    out = tmp_path / "run"
    final = train(tiny_cfg(video_dir, out, "trainer.max_steps=12", "optim.lr=3e-3"))
    assert final == out / "0_sft" / "final"
    assert (final / "model.safetensors").is_file() and (final / "vidtempo.json").is_file()
    saved = OmegaConf.load(out / "recipe.yaml")
    assert saved.output_dir == str(out) and saved.trainer.max_steps == 12 and "${" not in (out / "recipe.yaml").read_text()
    assert (final / "recipe.yaml").is_file() and (out / "0_sft" / "checkpoints" / "last.ckpt").is_file()
    curve = losses(out / "0_sft")
    assert len(curve) >= 10 and sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 * 0.8
    code = main(["infer", str(RECIPE), "--checkpoint", str(final), "--video", str(video_dir / "v1.mp4"),
                 "--prompt", "When is the beep?", "--max-new-tokens", "6"])
    assert code == 0 and capsys.readouterr().out.strip()


def test_rerun_resumes_from_last_checkpoint(video_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(video_dir, out, "trainer.max_steps=3"))
    import shutil

    shutil.rmtree(out / "0_sft" / "final")  # pretend the run was interrupted after its checkpoint
    from vidtempo.training.manifest import RecipeChangedError

    with pytest.raises(RecipeChangedError, match=r"stage sft: trainer.max_steps: 3 -> 5.*--allow-changed-recipe"):
        train(tiny_cfg(video_dir, out, "trainer.max_steps=5"))  # a longer run is another recipe: said, not guessed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_cfg(video_dir, out, "trainer.max_steps=5"), allow_changed_recipe=True)
    # step 3 is mid-epoch: the training loader resumes there (tests/core/test_resumable_loader.py)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "0_sft" / "logs" / "metrics.csv")) if r.get("train/loss")]
    # the second run continued at step 3 instead of restarting from 0, and the first run's rows survived
    assert steps == [0, 1, 2, 3, 4]
    ckpt = torch.load(out / "0_sft" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 5
    assert "max_steps: 5" in ckpt["vidtempo_recipe"]  # the resolved recipe travels inside the checkpoint


def test_user_subclass_from_yaml_by_dotted_path(video_dir, tmp_path):
    DoubledPool.built = 0
    cfg = tiny_cfg(video_dir, tmp_path / "run", "trainer.max_steps=2")
    cfg.model.compressor = {"_target_": f"{__name__}.DoubledPool", "in_dim": 32, "gain": 3.0}
    final = train(cfg)
    assert DoubledPool.built >= 1
    config = json.loads((final / "vidtempo.json").read_text())
    assert config["model"]["compressor"]["_target_"].endswith("DoubledPool")


def test_stages_hand_weights_over_with_their_own_freeze_plans(video_dir, tmp_path):
    cfg = tiny_cfg(video_dir, tmp_path / "run", "trainer.max_steps=2")
    cfg.stages = [
        {"name": "align", "trainable": {"llm": False, "compressor": True, "projector": True}},
        {"name": "finetune", "trainable": {"vision_encoder": False, "compressor": False, "projector": False,
                                           "llm": "lora"}, "optim": {"lr": 1e-4}},
    ]
    final = train(cfg)
    assert final.parent.name == "1_finetune" and (tmp_path / "run" / "0_align" / "final").is_dir()
    from safetensors.torch import load_file

    first = load_file(str(tmp_path / "run" / "0_align" / "final" / "model.safetensors"))
    second = load_file(str(final / "model.safetensors"))
    assert any("lora_" in k for k in second) and not any("lora_" in k for k in first)
    key = "projector.net.0.weight"
    assert torch.equal(first[key], second[key])  # projector frozen in stage 2


def test_undecodable_videos_are_skipped_and_counted_then_fail_past_threshold(video_dir, tmp_path):
    from vidtempo.data.testing import make_corrupt_video
    from vidtempo.training.skips import TooManySkippedError

    bad = tmp_path / "bad.mp4"
    make_corrupt_video(bad)
    rows = [json.loads(line) for line in (video_dir / "train.jsonl").read_text().splitlines()]
    rows[1]["video"] = str(bad)
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = tiny_cfg(video_dir, tmp_path / "run", "trainer.max_steps=2", "data.max_skip_fraction=0.5")
    cfg.data.train.path = str(tmp_path / "mixed.jsonl")
    train(cfg)  # 1 of 4 skipped: under the threshold
    cfg2 = tiny_cfg(video_dir, tmp_path / "run2", "trainer.max_steps=14", "data.max_skip_fraction=0.0")
    cfg2.data.train.path = str(tmp_path / "mixed.jsonl")
    with pytest.raises(TooManySkippedError, match="bad.mp4"):
        train(cfg2)


def test_init_from_starts_a_run_from_a_finished_one_and_rejects_a_wrong_folder(video_dir, tmp_path):
    from safetensors.torch import load_file

    from vidtempo.config.errors import RecipeError

    first = train(tiny_cfg(video_dir, tmp_path / "a", "trainer.max_steps=2"))
    cfg = tiny_cfg(video_dir, tmp_path / "b", "trainer.max_steps=1", "optim.lr=0.0", "optim.warmup_steps=0")
    cfg.init_from = str(first)
    # lr 0: nothing moves, so the second run's weights are the first run's
    second = train(cfg)
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg = tiny_cfg(video_dir, tmp_path / "c", "trainer.max_steps=1")
    cfg.init_from = str(tmp_path / "a")  # the run folder, not its final/ checkpoint
    with pytest.raises(RecipeError, match="init_from.*not a vidtempo checkpoint directory"):
        train(cfg)


def test_the_next_stage_starts_from_the_last_stages_per_frame_heads(tmp_path):
    """synth_staged.yaml trains the saliency and tag heads (here also the encoder tag head) in both stages:
    stage 0 saves them in its final/,
    the last stage starts from them across a stage without heads (with lr 0 there they come out unchanged;
    fresh heads would differ)."""
    from safetensors.torch import load_file

    from vidtempo.training.head_io import HEADS_NAME

    recipe = RECIPE.parent / "synth_staged.yaml"
    cfg = load_recipe(recipe, [f"output_dir={tmp_path / 'run'}", "trainer.max_steps=2", "~data.val"])
    for stage in cfg.stages:
        stage.trainer.max_time = "00:01:00:00"
        stage.data.pop("val", None)
        stage.data.train.root, stage.data.train.num_videos, stage.data.train.max_duration = str(tmp_path / "synth"), 10, 8
    OmegaConf.update(cfg, "objective.aux.encoder_tag", {"_target_": "encoder_tags", "weight": 0.5},
                     force_add=True)  # a head on the encoder's features too
    cfg.stages[1].optim = {"lr": 0.0, "warmup_steps": 0}
    # a stage without per-frame losses in between passes the heads on
    cfg.stages.insert(1, {**OmegaConf.to_container(cfg.stages[0]), "name": "plain",
                          "objective": {"_target_": "sft"}})
    final = train(cfg)
    assert not (tmp_path / "run" / "1_plain" / "final" / HEADS_NAME).exists()
    first = load_file(str(tmp_path / "run" / "0_ground" / "final" / HEADS_NAME))
    second = load_file(str(final / HEADS_NAME))
    assert {k.split(".")[0] for k in first} == {"saliency", "tag", "encoder_tag"} and first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # handed over in memory
    import shutil

    shutil.rmtree(final.parent)  # run stage 1 again: stage 0 is finished, so its heads come from its final/
    second = load_file(str(train(cfg) / HEADS_NAME))
    assert all(torch.equal(first[k], second[k]) for k in first)
