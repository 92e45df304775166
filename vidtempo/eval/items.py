"""What a benchmark yields for the runner: :class:`EvalItem` (one prompted question with its ground truth),
where its data lives (:class:`BenchmarkSource`) and the error that stops a run (:class:`EvalError`).

Kept apart from :mod:`vidtempo.eval.benchmarks` so that the scoring modules (:mod:`vidtempo.eval.results`)
can use the item type while the benchmark specs use the scoring modules.

Example:
    >>> item = EvalItem("q1", "grounding", "v.mp4", "<video>\\nWhen?", (1.0, 2.5))
    >>> item.ground_truth()
    [1.0, 2.5]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidtempo.data.samples import ConversationSample


class EvalError(ValueError):
    """A problem that stops an evaluation run (bad benchmark, missing annotations, unsupported model)."""


@dataclass
class EvalItem:
    """One question of a benchmark, ready to prompt.

    Attributes:
        id: item id (unique within the benchmark).
        kind: ``"grounding"`` or ``"mcq"``.
        video: video path.
        prompt: the user text (the ``<video>`` placeholder first).
        answer: ground truth: ``(start, end)`` seconds for grounding, a letter for multiple choice.
        task: task name (MVBench task, Video-MME task type, TempoSynth task, ``grounding``).
        duration: video length in seconds when known.
        options: lettered options (``"A. text"``) for multiple choice.
        meta: anything else (``order_dependent``, Video-MME duration class and domain, ...).

    Example:
        >>> item = EvalItem("q1", "mcq", "v.mp4", "<video>\\nWhich?", "B", options=("A. x", "B. y"))
        >>> item.sample().messages[0]["content"]
        '<video>\\nWhich?'
    """

    id: str
    kind: str
    video: str
    prompt: str
    answer: Any
    task: str = ""
    duration: float | None = None
    options: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def sample(self) -> ConversationSample:
        """The conversation the collator consumes (one user turn; the answer is generated)."""
        return ConversationSample(
            video=self.video,
            messages=[{"role": "user", "content": self.prompt}],
            id=self.id,
            meta={"task": self.task},
        )

    def ground_truth(self) -> Any:
        """JSON-ready ground truth: ``[start, end]`` or the letter."""
        return list(self.answer) if self.kind == "grounding" else self.answer


@dataclass
class BenchmarkSource:
    """Where a benchmark's data lives (CLI flags over ``eval.benchmarks.<name>`` in the recipe).

    Attributes:
        annotations: annotation file (for ``synth``: the TempoSynth folder holding ``manifest.json``).
        video_root: folder the annotation's video names are relative to.
        options: benchmark-specific keys: ``durations`` (Charades CSV), ``answers`` (EgoSchema
            ``subset_answers.json``), ``split`` (``synth``, default ``test``), ``video_ext``.
    """

    annotations: str | None = None
    video_root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
