"""Importing the prefgen package stays light (no torch)."""

from __future__ import annotations

import subprocess
import sys


def test_package_import_is_light() -> None:
    code = "import sys, vidtempo.prefgen, vidtempo.cli.prefgen; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
