"""Targets of a TempoSynth report: each measure, its bound, and whether the report meets it.

The demo (``vidtempo demo``) prints these beside its results; ``DEMO_TARGETS`` are the targets of the
TempoSynth issue (grounding, ordering from time, audio-visual questions), each read from one condition of a
``synth`` report (``normal``, or a control: ``time`` shuffles the frames, ``blind`` blanks them).

Example:
    >>> report = {"metrics": {"normal": {"grounding": {"strict": {"mIoU": 61.2}}}}}
    >>> check = check_targets(report, [Target("grounding mIoU", "normal", ("grounding", "mIoU"), ">=", 50.0)])[0]
    >>> check.value, check.met, check.target.bound_text()
    (61.2, True, '>= 50')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OPERATORS = (">=", "<=")


@dataclass(frozen=True)
class Target:
    """One bound on one measure of a report.

    Attributes:
        label: what the table calls it ("ordering, time control").
        condition: the report condition it reads (``normal``, ``time`` or ``blind``).
        path: the measure under ``report["metrics"][condition]``, without the scoring policy: ``("grounding",
            "mIoU")`` reads ``grounding.strict.mIoU``; ``("mcq", "order")`` reads the task's accuracy
            (``mcq.strict.per_task.order.accuracy``).
        op: ``>=`` (at least) or ``<=`` (at most).
        bound: the bound, in the report's unit (percent).
    """

    label: str
    condition: str
    path: tuple[str, ...]
    op: str
    bound: float

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"target '{self.label}': op must be one of {OPERATORS}, got {self.op!r}")
        if len(self.path) != 2 or self.path[0] not in ("grounding", "mcq"):
            raise ValueError(f"target '{self.label}': path must be ('grounding', MEASURE) or ('mcq', TASK), "
                             f"got {self.path!r}")  # fmt: skip

    def bound_text(self) -> str:
        return f"{self.op} {self.bound:g}"

    def read(self, report: Mapping[str, Any]) -> float | None:
        """The measure's value in ``report`` (None when the report lacks it, e.g. a task it did not run)."""
        kind, name = self.path
        keys = ("grounding", "strict", name) if kind == "grounding" else ("mcq", "strict", "per_task", name, "accuracy")
        node: Any = (report.get("metrics") or {}).get(self.condition)
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


@dataclass(frozen=True)
class TargetCheck:
    """A target, the value the report has, and whether it meets the target (a missing value does not)."""

    target: Target
    value: float | None

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.target.bound if self.target.op == ">=" else self.value <= self.target.bound


# The TempoSynth issue's targets (docs/benchmarks/synth.md, "Where issue 5's targets stand"), in percent.
DEMO_TARGETS: tuple[Target, ...] = (
    Target("grounding mIoU", "normal", ("grounding", "mIoU"), ">=", 50.0),
    Target("grounding mIoU, blind", "blind", ("grounding", "mIoU"), "<=", 25.0),
    Target("grounding R1@0.5", "normal", ("grounding", "R1@0.5"), ">=", 50.0),
    Target("ordering", "normal", ("mcq", "order"), ">=", 85.0),
    Target("ordering, time control", "time", ("mcq", "order"), "<=", 40.0),
    Target("audio-visual", "normal", ("mcq", "audio_visual"), ">=", 80.0),
)


def check_targets(report: Mapping[str, Any], targets: Sequence[Target] = DEMO_TARGETS) -> list[TargetCheck]:
    """Each target with the report's value (``report.json`` of a ``synth`` evaluation)."""
    return [TargetCheck(t, t.read(report)) for t in targets]


def shortened_run_note(steps: int, planned: int) -> str | None:
    """The line a table must carry when training stopped before its planned steps (a time box cut it short);
    None for a run that trained them all.

    Example:
        >>> shortened_run_note(1287, 2000)
        "stopped at step 1287 of 2000: results below are not the demo's"
        >>> shortened_run_note(2000, 2000) is None
        True
    """
    if steps >= planned:
        return None
    return f"stopped at step {steps} of {planned}: results below are not the demo's"
