"""The ``Example:`` blocks of the prefgen modules run and hold; importing the package stays light."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["vidtempo.prefgen.select", "vidtempo.prefgen.captions", "vidtempo.prefgen.pairs"]
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0


def test_package_import_is_light() -> None:
    code = "import sys, vidtempo.prefgen, vidtempo.cli.prefgen; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
