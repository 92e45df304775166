"""Crash-safe writes: a file or a whole directory appears under its final name complete, or not at all.

* :func:`atomic_write_text` / :func:`atomic_write_bytes`: write a sibling temp file, flush + fsync, then
  ``os.replace`` (atomic on POSIX within one filesystem; the temp file sits in the target's own directory, so
  it never crosses filesystems the way a ``$TMPDIR`` temp file does).
* :func:`atomic_dir`: build a directory under a hidden temp name, write the completion marker last, then
  swap it into place. A reader checks :func:`is_complete`; a directory without the marker is a leftover of an
  interrupted writer (older vidtempo versions wrote no marker: ``is_complete(..., legacy=...)``).
* :func:`remove_stale_temps`: delete temp files and directories an interrupted writer left beside a target.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> with atomic_dir(root / "final") as tmp:
    ...     _ = (tmp / "weights.bin").write_bytes(b"123")
    >>> is_complete(root / "final"), sorted(p.name for p in (root / "final").iterdir())
    (True, ['COMPLETE', 'weights.bin'])
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
TMP_TAG = ".tmp-"


def _temp_name(target: Path) -> Path:
    return target.parent / f".{target.name}{TMP_TAG}{os.getpid()}-{time.monotonic_ns()}"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot open a directory for fsync
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a sibling temp file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def is_complete(directory: str | Path, legacy: str | None = None) -> bool:
    """Whether ``directory`` was finished by :func:`atomic_dir` (its marker exists). ``legacy``: a file name
    whose presence also counts, for directories written before markers existed; None = markers only."""
    directory = Path(directory)
    if (directory / MARKER).is_file():
        return True
    return legacy is not None and (directory / legacy).is_file() and not _has_temp_siblings(directory)


def _has_temp_siblings(directory: Path) -> bool:
    return directory.parent.is_dir() and any(directory.parent.glob(f".{directory.name}{TMP_TAG}*"))


@contextlib.contextmanager
def atomic_dir(target: str | Path, info: dict[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temp directory to fill; on success write the marker (``info`` as JSON) and swap it in as
    ``target`` (an older ``target`` is replaced). On an exception the temp directory is removed and ``target``
    keeps its previous content. Not for two concurrent writers of one target (the second removes the first's
    temp directory)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)  # what an earlier, killed writer of the same target left
    tmp = _temp_name(target)
    tmp.mkdir()
    try:
        yield tmp
        atomic_write_text(tmp / MARKER, json.dumps(info or {}, default=str) + "\n")
        old = None
        if target.exists():
            old = _temp_name(target)
            os.replace(target, old)  # the previous version steps aside (a crash now: it is a temp, target absent)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Delete the temp files / directories an interrupted :func:`atomic_dir` or :func:`atomic_write_bytes`
    left beside ``target``; returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    for leftover in target.parent.glob(f".{target.name}{TMP_TAG}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed
