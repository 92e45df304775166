"""The runner and benchmark modules stay import-light (no model code)."""

from __future__ import annotations

import subprocess
import sys


def test_runner_import_does_not_load_models() -> None:
    code = (
        "import sys, vidtempo.eval.runner, vidtempo.cli.eval; "
        "print(any(m in sys.modules for m in ('transformers', 'lightning', 'vidtempo.training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
