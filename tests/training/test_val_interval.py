"""``fit_val_interval`` leaves Lightning a setting it accepts: an int ``val_check_interval`` longer than an epoch
becomes once per epoch, unless ``check_val_every_n_epoch: null`` makes it count steps across epochs (then it
stays, as the synth recipes and ``vidtempo demo`` on few videos need); and a real run with that setting trains."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest

from vidtempo.config.load import load_recipe
from vidtempo.training.build import fit_val_interval
from vidtempo.training.run import train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"


def _datamodule(batches: int, val: bool = True) -> SimpleNamespace:
    return SimpleNamespace(train_dataloader=lambda: range(batches), val_set=[0] if val else None)


@pytest.mark.parametrize(
    "trainer, expected",
    [
        ({"val_check_interval": 200}, 1.0),  # longer than an epoch, per-epoch counting: once per epoch
        ({"val_check_interval": 200, "check_val_every_n_epoch": 1}, 1.0),
        ({"val_check_interval": 200, "check_val_every_n_epoch": None}, 200),  # steps across epochs: kept
        ({"val_check_interval": 20}, 20),  # fits in an epoch
        ({"val_check_interval": 0.5}, 0.5),
    ],
)
def test_fit_val_interval_gives_a_setting_lightning_accepts(trainer, expected):
    stage = {"trainer": trainer}
    out = fit_val_interval(stage, _datamodule(50))["trainer"]
    assert out["val_check_interval"] == expected
    assert out.get("check_val_every_n_epoch", 1) == trainer.get("check_val_every_n_epoch", 1)
    assert fit_val_interval(stage, _datamodule(50, val=False)) is stage  # nothing to validate: untouched


def test_step_interval_across_short_epochs_trains_and_validates(video_dir, tmp_path):
    """Four videos, batch 2: a 2-batch epoch under a 3-step interval counted across epochs (Lightning refused the
    once-per-epoch fraction the function used to put there)."""
    data = {"_target_": "conversation", "path": str(video_dir / "train.jsonl"), "video_root": str(video_dir)}
    cfg = load_recipe(RECIPE, [f"output_dir={tmp_path / 'run'}", "trainer.max_steps=4", "trainer.val_check_interval=3",
                               "+trainer.check_val_every_n_epoch=null", "trainer.log_every_n_steps=1",
                               "data.batch_size=2", "checkpoint.every_n_steps=0"])  # fmt: skip
    cfg.data.train, cfg.data.val = data, data
    final = train(cfg)
    with open(final.parent / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("val/loss")] == [2]  # validated once, after step 3 (0-based 2)
