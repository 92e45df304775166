"""The ``Example:`` blocks of the runner modules run and hold; the benchmark modules stay import-light."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "vidtempo.eval.benchmarks",
        "vidtempo.eval.controls",
        "vidtempo.eval.results",
        "vidtempo.eval.runner",
        "vidtempo.cli.eval",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0


def test_runner_import_does_not_load_models() -> None:
    code = (
        "import sys, vidtempo.eval.runner, vidtempo.cli.eval; "
        "print(any(m in sys.modules for m in ('transformers', 'lightning', 'vidtempo.training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
