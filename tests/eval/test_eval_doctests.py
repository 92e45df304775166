"""The ``Example:`` blocks of the eval modules run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module", ["vidtempo.eval.metrics", "vidtempo.eval.parsing", "vidtempo.eval.scorers"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0


def test_package_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, vidtempo.eval.scorers; print(any(m in sys.modules for m in ('torch', 'lightning')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
