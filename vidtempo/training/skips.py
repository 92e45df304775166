"""Count samples the collator skipped (undecodable videos, over-long samples) and stop the run past a threshold.

Example:
    >>> tracker = SkipTracker(max_fraction=0.5, min_samples=1)
    >>> tracker.seen, tracker.skipped
    (0, 0)
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class TooManySkippedError(RuntimeError):
    """More samples failed to decode than the recipe allows."""


class SkipTracker:
    """Running totals of seen/skipped samples; raises ``TooManySkippedError`` over ``max_fraction``."""

    def __init__(self, max_fraction: float = 0.1, min_samples: int = 20) -> None:
        self.max_fraction = max_fraction
        self.min_samples = min_samples
        self.seen = 0
        self.skipped = 0
        self.examples: list[str] = []

    def update(self, batch: Any, stage: str = "train") -> None:
        skipped = list(getattr(batch, "skipped", []))
        self.seen += len(batch) + len(skipped)
        self.skipped += len(skipped)
        for rec in skipped:
            log.warning("%s: skipped sample %s (%s): %s", stage, rec.id, rec.path, rec.reason)
            if len(self.examples) < 5:
                self.examples.append(f"{rec.id} ({rec.path}): {rec.reason}")
        fraction = self.skipped / max(1, self.seen)
        if self.skipped and self.seen >= self.min_samples and fraction > self.max_fraction:
            raise TooManySkippedError(
                f"{self.skipped} of {self.seen} samples ({fraction:.0%}) were skipped (undecodable or over-long), more "
                f"than data.max_skip_fraction={self.max_fraction}. First failures: " + "; ".join(self.examples)
            )

    def check_final(self) -> None:
        """At the end of a run, whatever its length: fail when every sample, or more than the allowed
        fraction, could not be decoded (``update`` only judges after ``min_samples``)."""
        fraction = self.skipped / max(1, self.seen)
        if self.skipped and (self.skipped == self.seen or fraction > self.max_fraction):
            raise TooManySkippedError(
                f"{self.skipped} of {self.seen} samples ({fraction:.0%}) were skipped (undecodable or over-long), more "
                f"than data.max_skip_fraction={self.max_fraction}; nothing was saved as final/. First failures: "
                + "; ".join(self.examples)
            )

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "skipped": self.skipped, "examples": self.examples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state.get("seen", 0))
        self.skipped = int(state.get("skipped", 0))
        self.examples = list(state.get("examples", []))
