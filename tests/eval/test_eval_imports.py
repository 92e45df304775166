"""Importing the scorers loads neither torch nor lightning."""

from __future__ import annotations


def test_package_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, vidtempo.eval.scorers; print(any(m in sys.modules for m in ('torch', 'lightning')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
