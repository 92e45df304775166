"""A CSV logger that keeps the rows of the run it resumes, and never leaves a half-written file.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it starts in a folder that has one, so a resumed run
lost every metric logged before the interruption, and a second interruption before its first save lost them
for good. :class:`ResumableCSVLogger` reads those rows and leaves the file in place; its first save rewrites
the whole file atomically (``vidtempo.utils.atomic``) with the earlier rows first, dropping any at or after
the first step logged again (the steps between the last checkpoint and the interruption are trained, and
logged, a second time). Later saves append their rows (a save costs its own rows, not the whole history),
unless a new column appeared, which rewrites the file atomically. A crash in the middle of an append leaves
a last line without its newline: the next run drops it (those steps are logged again after the resume).

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> first = ResumableCSVLogger(root, name="logs", version="")
    >>> first.log_metrics({"loss": 2.0}, step=0); first.log_metrics({"loss": 1.5}, step=1); first.save()
    >>> again = ResumableCSVLogger(root, name="logs", version="")  # resumed from a checkpoint at step 1
    >>> open(f"{root}/logs/metrics.csv").read().split()  # nothing lost before the resumed run saves
    ['loss,step', '2.0,0', '1.5,1']
    >>> again.log_metrics({"loss": 1.4}, step=1); again.save()
    >>> open(f"{root}/logs/metrics.csv").read().split()
    ['loss,step', '2.0,0', '1.4,1']
"""

from __future__ import annotations

import csv
import io
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from vidtempo.utils.atomic import atomic_write_text


class _KeepingWriter(ExperimentWriter):
    """Keeps the existing ``metrics.csv`` until the first save, rewrites it atomically then, and appends after."""

    def _check_log_dir_exists(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.previous: list[dict[str, Any]] | None = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                text = file.read()
            if text and not text.endswith("\n"):  # an append cut short: its partial row is not a row
                text = text[: text.rfind("\n") + 1]
            self.previous = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(io.StringIO(text))
                             if row.get("step") not in (None, "")]  # fmt: skip

    def save(self) -> None:
        if not self.metrics:
            return
        new, self.metrics = self.metrics, []
        if self.previous is not None:  # the first save of this run: keep the rows before its first step
            first = min(int(m["step"]) for m in new)
            self.rows = [row for row in self.previous if int(row["step"]) < first]
            self.previous = None
            self.keys = []  # always rewritten: the kept rows may have columns the new ones lack
        self.rows.extend(new)
        keys = sorted(set(self.keys).union(*(self.rows if not self.keys else new)))
        if keys == self.keys:
            self._append(new)
        else:
            self.keys = keys
            atomic_write_text(self.metrics_file_path, self._csv(self.rows, header=True))

    def _append(self, rows: list[dict[str, Any]]) -> None:
        with open(self.metrics_file_path, "a", newline="") as file:
            file.write(self._csv(rows, header=False))
            file.flush()

    def _csv(self, rows: list[dict[str, Any]], header: bool) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.keys, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (same arguments as Lightning's)."""

    @property
    @rank_zero_experiment  # other ranks get Lightning's no-op experiment, as with the base class
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment
