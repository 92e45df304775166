"""``benchmarks/train_throughput.py --smoke`` (#27 item 10): the real-recipe throughput benchmark runs end to end
on CPU (real widths, 1 LLM block, tiny inputs) and ends with a finite ``RESULT`` line per case and variant."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {"tdc_sft_lora_padded", "tdc_sft_lora_packed", "tempo_dpo_two_forward", "tempo_dpo_shared"}
KEYS = ("tokens_per_s", "samples_per_s", "mfu", "peak_mem_gb", "ratio_vs_baseline")


def test_the_smoke_run_prints_a_finite_result_line_per_case(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--smoke",
                          "--peak-tflops", "1.0", "--workdir", str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = {}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT case="):
            fields = dict(item.split("=", 1) for item in line.split()[1:])
            results[fields["case"]] = fields
    assert set(results) == VARIANTS, out.stdout[-3000:]
    for case, fields in results.items():
        for key in KEYS:
            value = float(fields[key])
            assert math.isfinite(value) and value > 0, (case, key, value)
        assert (float(fields["ratio_vs_baseline"]) == 1.0) == (case.endswith(("_padded", "_two_forward")))
    assert "loss_diff" in out.stdout  # the padded and packed losses were compared at the same weights
