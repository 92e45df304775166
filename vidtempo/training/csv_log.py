"""A CSV logger that keeps the rows of the run it resumes.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it starts in a folder that has one, so a resumed run
lost every metric logged before the interruption. :class:`ResumableCSVLogger` reads those rows first and
writes them back ahead of the new ones, dropping any at or after the first step logged again (the steps
between the last checkpoint and the interruption are trained, and logged, a second time).

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> first = ResumableCSVLogger(root, name="logs", version="")
    >>> first.log_metrics({"loss": 2.0}, step=0); first.log_metrics({"loss": 1.5}, step=1); first.save()
    >>> again = ResumableCSVLogger(root, name="logs", version="")  # resumed from a checkpoint at step 1
    >>> again.log_metrics({"loss": 1.4}, step=1); again.save()
    >>> open(f"{root}/logs/metrics.csv").read().split()
    ['loss,step', '2.0,0', '1.4,1']
"""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _KeepingWriter(ExperimentWriter):
    """Reads the existing ``metrics.csv`` before the base class removes it; prepends it on the first save."""

    def _check_log_dir_exists(self) -> None:
        self.previous: list[dict[str, Any]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.previous = [row for row in csv.DictReader(file) if row.get("step") not in (None, "")]
            self._fs.rm_file(self.metrics_file_path)

    def save(self) -> None:
        if self.previous and self.metrics:
            first = min(int(m["step"]) for m in self.metrics)
            kept = [{k: v for k, v in row.items() if v != ""} for row in self.previous if int(row["step"]) < first]
            self.metrics = kept + self.metrics
            self.previous = []
        super().save()


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (same arguments as Lightning's)."""

    @property
    @rank_zero_experiment  # other ranks get Lightning's no-op experiment, as with the base class
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment
