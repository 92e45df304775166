"""Shared by the benchmark scripts: replace one ``## Section`` of benchmarks/RESULTS.md, keep the others."""

from __future__ import annotations

from pathlib import Path


def write_section(section: str, text: str, path: Path) -> None:
    """Replace ``section`` (a ``## ...`` heading line) of ``path`` with ``text``, or append it."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if section in old:
        start = old.index(section)
        nxt = old.find("\n## ", start + len(section))
        new = old[:start] + text + (old[nxt:] if nxt != -1 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)
