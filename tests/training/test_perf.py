"""``ThroughputMonitor`` (``vidtempo.training.perf``): the ``perf/*`` keys on a 2-step CPU training run, the
device-peak table and its overrides."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from vidtempo.config.load import load_recipe
from vidtempo.training.perf import PEAK_ENV, ThroughputMonitor, device_peak_tflops, resolve_peak_tflops
from vidtempo.training.run import train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"


def _rows(stage_dir: Path) -> list[dict[str, str]]:
    with open(stage_dir / "logs" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("perf/samples_per_s")]


def test_two_step_cpu_run_logs_throughput_and_mfu_with_a_peak(video_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(PEAK_ENV, "0.5")  # a CPU has no table peak: MFU only with one given
    out = tmp_path / "run"
    cfg = load_recipe(RECIPE, [f"output_dir={out}", "~data.val", "trainer.val_check_interval=null",
                               "trainer.log_every_n_steps=1", "data.batch_size=2", "trainer.max_steps=2"])  # fmt: skip
    cfg.data.train = {
        "_target_": "conversation",
        "path": str(video_dir / "train.jsonl"),
        "video_root": str(video_dir),
    }
    train(cfg)
    rows = _rows(out / "0_sft")
    assert len(rows) == 2
    for row in rows:
        values = {
            k: float(row[k]) for k in ("perf/samples_per_s", "perf/tokens_per_s", "perf/tflops", "perf/mfu")
        }
        assert all(v > 0 for v in values.values()), values
        assert values["perf/mfu"] == pytest.approx(values["perf/tflops"] / 0.5, rel=1e-4)
        assert (
            values["perf/tokens_per_s"] > 10 * values["perf/samples_per_s"]
        )  # text + video tokens per sample


def test_peak_table_and_overrides(monkeypatch):
    assert device_peak_tflops("NVIDIA H200") == device_peak_tflops("NVIDIA H100 80GB HBM3") == 989.5
    assert device_peak_tflops("NVIDIA H200 NVL") == device_peak_tflops("NVIDIA H100 NVL") == 835.5
    assert device_peak_tflops("NVIDIA A100 80GB PCIe") == device_peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    monkeypatch.delenv(PEAK_ENV, raising=False)
    assert resolve_peak_tflops(None, torch.device("cpu"), "bf16-mixed") == (None, "none")
    monkeypatch.setenv(PEAK_ENV, "123")
    assert resolve_peak_tflops(None, torch.device("cpu"), "32-true") == (123.0, PEAK_ENV)
    assert resolve_peak_tflops(7.0, torch.device("cpu"), "32-true") == (7.0, "argument")
    assert ThroughputMonitor(peak_tflops=7.0).peak_tflops == 7.0


def test_batch_shapes_sum_the_flop_model_over_samples_and_skip_other_batches():
    from types import SimpleNamespace

    from vidtempo.models.build import build_video_llm
    from vidtempo.models.flops import model_flops
    from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX
    from vidtempo.training.perf import batch_shapes, shapes_work

    model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
                             "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})  # fmt: skip
    ids = torch.tensor([[5, VIDEO_TOKEN_INDEX, 7, 8, 9], [5, VIDEO_TOKEN_INDEX, 7, 0, 0]])
    side = SimpleNamespace(input_ids=ids, attention_mask=(ids != 0).long(), frames=torch.zeros(2, 4, 3, 32, 32),
                           frame_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool(), features=None, audio=None)  # fmt: skip
    flops, tokens = shapes_work(model, batch_shapes(model, side), {})
    expected = [model_flops(model, 4, 4), model_flops(model, 2, 2)]
    assert flops == sum(r.train for r in expected) and tokens == sum(r.llm_tokens for r in expected)
    pair = SimpleNamespace(chosen=side, rejected=side)
    assert shapes_work(model, batch_shapes(model, pair), {}) == (2 * flops, 2 * tokens)
    assert (
        batch_shapes(model, SimpleNamespace(captions=["a red circle"])) is None
    )  # the align objective's batch
