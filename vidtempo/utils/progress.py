"""The rich progress bar of long vidtempo jobs (eval generation, prefgen): description or a fixed title, bar,
done / total, a per-task ``note`` field, elapsed time and eta.

Example:
    >>> with progress_bar(False) as bar:
    ...     task = bar.add_task("eval synth", total=2, note="")
    ...     bar.advance(task)
"""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool, title: str | None = None) -> Any:
    """A ``rich.progress.Progress`` (``enabled=False``: silent); ``title`` replaces each task's description.
    Tasks must carry a ``note`` field (``add_task(..., note="")``)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{title}" if title else "[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
