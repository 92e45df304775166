"""Every ``Example:`` in the package runs and holds: one doctest per vidtempo module (walked, not listed),
so a new module's examples are checked without anyone adding it here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vidtempo

MODULES = sorted(m.name for m in pkgutil.walk_packages(vidtempo.__path__, prefix="vidtempo."))


def test_walk_found_the_package():
    assert {"vidtempo.registry", "vidtempo.models.video_llm", "vidtempo.eval.metrics"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module}"
