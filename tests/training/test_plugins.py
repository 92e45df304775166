"""A new objective with its own collator and a new auxiliary loss, defined outside vidtempo and registered
nowhere, train through ``vidtempo train`` by dotted path (tests/training/plugins/lab_plugins.py)."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

from vidtempo.cli.main import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_own_objective_collator_and_aux_loss_train_by_dotted_path(video_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE / "plugins"))
    recipe = tmp_path / "lab.yaml"
    recipe.write_text(f"""
_base_: {ROOT / "recipes/tiny/sft_pool.yaml"}
output_dir: {tmp_path / "run"}
data:
  train: {{_target_: conversation, path: {video_dir / "train.jsonl"}, video_root: {video_dir}}}
  val: null
  batch_size: 2
objective:
  _target_: lab_plugins.SampleMeanSFT
  aux:
    probe: {{_target_: lab_plugins.BrightnessProbe, weight: 0.5}}
trainer: {{max_steps: 8, log_every_n_steps: 1, val_check_interval: null}}
optim: {{lr: 3.0e-3}}
""")
    assert main(["train", str(recipe)]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "0_SampleMeanSFT" / "logs" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("train/probe_loss")]
    assert len(logged) == 8
    assert all(float(r["train/answer_tokens"]) > 0 for r in logged)  # its own collator made the batches
    probe = [float(r["train/probe_loss"]) for r in logged]
    assert probe[-1] < probe[0]  # the probe learns
    for r in logged:  # total = the objective's per-sample loss + 0.5 x the probe's
        assert float(r["train/loss"]) > 0.5 * float(r["train/probe_loss"])
    names = subprocess.run(["grep", "-rlE", "lab_plugins|SampleMeanSFT|BrightnessProbe|AnswerCountingCollator",
                            str(ROOT / "vidtempo")], capture_output=True, text=True)  # fmt: skip
    assert names.stdout == "", names.stdout  # nothing in the package knows them
