"""The recipe's ``eval:`` section as :class:`EvalSettings` (all keys optional)::

    eval:
      batch_size: 8          # items per generate() call
      num_workers: 2         # DataLoader workers decoding videos
      processes: 1           # CPU only: share the batches among N processes of one thread each (same rows)
      max_new_tokens: 32
      device: auto           # auto = cuda when available, else cpu
      collator: {}           # overrides of data.collator (num_frames, fps, frame_size, backend, audio, ...)
      prompts: {}            # template name -> template (see vidtempo.eval.benchmarks)
      option_format: null    # e.g. "({letter}) {text}"; null = the benchmark's default
      controls: [time, blind]  # conditions besides "normal", for benchmarks that run controls (synth)
      control_seed: 0
      mcq_scoring: generate  # or likelihood: pick the option the model finds most likely (choice_scoring.py)
      mcq_answer: letter     # what likelihood scores as the answer: the option's letter or its text
      lvcot: null            # TDC's LVCoT: {enabled, segments | rule, prompt, max_new_tokens} (docs/methods/lvcot.md)
      benchmarks:            # data locations (the CLI flags win)
        charades_sta: {annotations: ..., video_root: ..., durations: ...}
        synth: {annotations: runs/data/temposynth, split: test}

Example:
    >>> s = EvalSettings.from_recipe({"eval": {"batch_size": 2}, "data": {"collator": {"num_frames": 4}}})
    >>> s.batch_size, s.collator["num_frames"], s.collator["generation"]
    (2, 4, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vidtempo.data.video_prompt import inference_collator_settings
from vidtempo.eval.benchmarks import (
    BenchmarkSource,
    EvalError,
    check_template,
    default_prompts,
    get_benchmark,
)
from vidtempo.eval.choice_scoring import MCQ_ANSWER, MCQ_SCORING
from vidtempo.eval.controls import CONTROLS

EVAL_KEYS = {
    "batch_size",
    "num_workers",
    "processes",
    "max_new_tokens",
    "device",
    "collator",
    "prompts",
    "option_format",
    "controls",
    "control_seed",
    "benchmarks",
    "lvcot",
    "mcq_scoring",
    "mcq_answer",
}
def _positive_int(value: Any, key: str, *, zero_ok: bool = False) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if zero_ok else value > 0)
    if not ok:
        raise EvalError(
            f"eval.{key}: expected a {'non-negative' if zero_ok else 'positive'} integer, got {value!r}"
        )
    return int(value)


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EvalError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
    return dict(value)


def _lvcot_settings(node: Any) -> Any:
    from vidtempo.inference.lvcot import LVCoTError, LVCoTSettings

    try:
        return LVCoTSettings.from_dict(node, where="eval.lvcot")
    except LVCoTError as err:
        raise EvalError(str(err)) from err


@dataclass
class EvalSettings:
    """The ``eval:`` section of a recipe, with defaults (see the module docstring).

    Attributes:
        collator: ``VideoCollator`` keyword arguments: ``data.collator`` overlaid with ``eval.collator``,
            ``generation=True``.
        prompts: every template by name, recipe templates over the built-in ones.
        lvcot: ``LVCoTSettings`` when LVCoT is on (segment descriptions before every answer), else None.
        mcq_scoring: ``generate`` (free text, parsed) or ``likelihood`` (the most likely option; grounding
            items are still generated).
        mcq_answer: the answer form ``likelihood`` scores: ``letter`` or the option's ``text``.
        processes: CPU processes sharing the batches (``vidtempo.eval.parallel``); 1 = this process.
    """

    batch_size: int = 8
    num_workers: int = 2
    processes: int = 1
    max_new_tokens: int = 32
    device: str = "auto"
    collator: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=default_prompts)
    option_format: str | None = None
    controls: tuple[str, ...] = CONTROLS
    control_seed: int = 0
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    lvcot: Any = None
    mcq_scoring: str = "generate"
    mcq_answer: str = "letter"

    @classmethod
    def from_recipe(cls, cfg: dict[str, Any]) -> EvalSettings:
        """Read a resolved recipe (plain dict); bad ``eval`` keys or values raise :class:`EvalError`."""
        section = _mapping(cfg.get("eval"), "eval")
        unknown = sorted(set(section) - EVAL_KEYS)
        if unknown:
            raise EvalError(f"eval: unknown key(s) {unknown}; valid: {', '.join(sorted(EVAL_KEYS))}")
        try:  # the settings infer and serve use too (vidtempo.data.video_prompt)
            collator = inference_collator_settings(cfg)
        except ValueError as err:
            raise EvalError(str(err)) from err
        prompts = default_prompts()
        for name, template in _mapping(section.get("prompts"), "eval.prompts").items():
            prompts[name] = check_template(template, name)
        controls = tuple(section.get("controls", CONTROLS) or ())
        bad = [c for c in controls if c not in CONTROLS]
        if bad:
            raise EvalError(f"eval.controls: unknown control(s) {bad}; valid: {', '.join(CONTROLS)}")
        benchmarks = {
            k: _mapping(v, f"eval.benchmarks.{k}")
            for k, v in _mapping(section.get("benchmarks"), "eval.benchmarks").items()
        }
        for name in benchmarks:
            get_benchmark(name)
        option_format = section.get("option_format")
        if option_format is not None and not isinstance(option_format, str):
            raise EvalError(
                f"eval.option_format: expected a string like '({{letter}}) {{text}}', got {option_format!r}"
            )
        mcq_scoring, mcq_answer = section.get("mcq_scoring", "generate"), section.get("mcq_answer", "letter")
        if mcq_scoring not in MCQ_SCORING:
            raise EvalError(f"eval.mcq_scoring: expected one of {', '.join(MCQ_SCORING)}, got {mcq_scoring!r}")
        if mcq_answer not in MCQ_ANSWER:
            raise EvalError(f"eval.mcq_answer: expected one of {', '.join(MCQ_ANSWER)}, got {mcq_answer!r}")
        if mcq_scoring == "likelihood" and section.get("lvcot"):
            raise EvalError("eval.mcq_scoring: likelihood does not combine with eval.lvcot (LVCoT generates)")
        device = section.get("device", "auto")
        if not isinstance(device, str):
            raise EvalError(f"eval.device: expected a string ('auto', 'cpu', 'cuda', ...), got {device!r}")
        return cls(
            batch_size=_positive_int(section.get("batch_size", 8), "batch_size"),
            num_workers=_positive_int(section.get("num_workers", min(2, os.cpu_count() or 1)), "num_workers",
                                      zero_ok=True),
            processes=_positive_int(section.get("processes", 1), "processes"),
            max_new_tokens=_positive_int(section.get("max_new_tokens", 32), "max_new_tokens"),
            device=device, collator=collator, prompts=prompts, option_format=option_format,
            controls=controls, control_seed=int(section.get("control_seed", 0)), benchmarks=benchmarks,
            lvcot=_lvcot_settings(section.get("lvcot")), mcq_scoring=mcq_scoring, mcq_answer=mcq_answer,
        )  # fmt: skip

    def source(self, benchmark: str, annotations: str | None, video_root: str | None) -> BenchmarkSource:
        """Where the benchmark's data is: CLI values over ``eval.benchmarks.<name>``."""
        node = dict(self.benchmarks.get(benchmark, {}))
        ann = annotations or node.pop("annotations", None)
        root = video_root or node.pop("video_root", None)
        node.pop("annotations", None)
        node.pop("video_root", None)
        return BenchmarkSource(str(ann) if ann else None, str(root) if root else None, node)
