"""benchmarks/damo_tag_probe.py: every readout point gives (B, N, 128) states with the documented N, the probe
trains the compressor, and a run ends with its RESULT line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import damo_tag_probe  # noqa: E402


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from vidtempo.synth.generate import generate

    root = tmp_path_factory.mktemp("tagprobe") / "temposynth"
    generate(root, num_videos=24, seed=0, size=32, min_duration=6, max_duration=8, splits=(0.8, 0.1, 0.1),
             progress=False)  # fmt: skip
    return root


@pytest.mark.parametrize("reads", damo_tag_probe.READS)
def test_each_readout_point_trains_and_reports(reads, synth_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    damo_tag_probe.main(["--root", str(synth_root), "--reads", reads, "--steps", "2", "--clip-store",
                         str(tmp_path / "clips")])  # fmt: skip
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"RESULT reads={reads} steps=2 ") and "tag_loss_last50=" in last
    assert 0.0 < float(last.rsplit("=", 1)[1]) < 5.0


def test_streams_need_the_option(synth_root, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match="qformer_reads_streams=true"):
        damo_tag_probe.main(["--root", str(synth_root), "--reads", "streams", "--steps", "1", "--clip-store",
                             str(tmp_path / "clips"), "model.compressor.qformer_reads_streams=false"])  # fmt: skip
