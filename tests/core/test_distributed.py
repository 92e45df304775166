"""Two CPU processes over gloo (DDP, and FSDP2 through ModelParallelStrategy) train the tiny recipe to the
same weights as one process with the same global batch. SGD keeps the comparison exact (Adam's first steps
are sign-like and amplify reduction-order noise on near-zero gradients)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def run_train(recipe: Path, out: Path, *overrides: str) -> Path:
    cmd = [sys.executable, "-m", "vidtempo.cli.main", "train", str(recipe), f"output_dir={out}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "0_sft" / "final"


def write_recipe(video_dir: Path, tmp_path: Path) -> Path:
    rows = [json.loads(x) for x in (video_dir / "train.jsonl").read_text().splitlines()]
    for r in rows:  # same answer length for every sample: per-rank token means then average exactly
        r["conversations"][1]["value"] = "1.5 - 2.0 seconds"
        r["video"] = str(video_dir / r["video"])
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = tmp_path / "dist.yaml"
    recipe.write_text(
        f"_base_: {ROOT / 'recipes/tiny/sft_pool.yaml'}\n"
        f"data:\n  train: {{_target_: conversation, path: {tmp_path / 'train.jsonl'}}}\n  val: null\n"
        "  shuffle: false\n  batch_size: 2\n"
        "optim: {name: sgd, lr: 0.05, warmup_steps: 0, scheduler: constant}\n"
        "trainer: {max_steps: 2, val_check_interval: null, log_every_n_steps: 1}\n"
    )
    return recipe


def losses(run: Path) -> list[float]:
    with open(run / "0_sft" / "logs" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def check_two_processes(strategy: str, video_dir: Path, tmp_path: Path) -> None:
    recipe = write_recipe(video_dir, tmp_path)
    one = load_file(str(run_train(recipe, tmp_path / "one") / "model.safetensors"))
    curve = losses(tmp_path / "one")
    assert len(curve) == 2 and curve[1] < curve[0]  # the weights really moved
    final = run_train(recipe, tmp_path / strategy, "trainer.devices=2", f"trainer.strategy={strategy}",
                      "data.batch_size=1")
    two = load_file(str(final / "model.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=f"{strategy}: {key}")


@pytest.mark.distributed
def test_fsdp2_on_two_cpu_processes_matches_one_process(video_dir: Path, tmp_path: Path):
    check_two_processes("fsdp", video_dir, tmp_path)


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(video_dir: Path, tmp_path: Path):
    check_two_processes("ddp", video_dir, tmp_path)
