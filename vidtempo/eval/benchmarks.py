"""Benchmark definitions for the runner: how each benchmark's annotations become prompted eval items.

A benchmark turns its annotation file (read by the loaders of :mod:`vidtempo.data.datasets`) into
:class:`EvalItem` objects: the video, the rendered user prompt and the ground truth. Prompts come from
templates (``eval.prompts.<name>`` in the recipe); the built-in templates reproduce the prompts that
vidtempo's own training loaders write, so a model fine-tuned with vidtempo is asked the way it was taught.

Template fields:

* grounding (``charades_sta``, ``activitynet_grounding``): ``{question}`` (vidtempo's grounding question,
  ``"When does '<query>' happen in the video?"``), ``{query}`` (the sentence, final period removed),
  ``{duration}`` (seconds, or ``"unknown"``).
* multiple choice (``videomme``, ``mvbench``, ``egoschema``, ``synth_mcq``): ``{question}``, ``{options}``
  (one line per option, rendered with ``eval.option_format``), ``{instruction}``, ``{num_options}``.
* ``synth_grounding``: ``{question}`` (the TempoSynth question, ``"When is the red circle visible?"``),
  ``{duration}``.

Example:
    >>> render_prompt("{question}\\n{options}", "synth_mcq", question="Which appears first?",
    ...               options="A. the red circle")
    '<video>\\nWhich appears first?\\nA. the red circle'
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from vidtempo.data.samples import VIDEO_PLACEHOLDER
from vidtempo.eval.items import BenchmarkSource, EvalError, EvalItem
from vidtempo.eval.results import benchmark_metrics, official_mc_policy, synth_chance, synth_condition_metrics

LETTERS = "ABCDEFGHIJ"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."

# template name -> (default template, allowed fields)
_GROUNDING_FIELDS = ("question", "query", "duration")
_MC_FIELDS = ("question", "options", "instruction", "num_options")
PROMPT_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "charades_sta": ("{question}", _GROUNDING_FIELDS),
    "activitynet_grounding": ("{question}", _GROUNDING_FIELDS),
    "videomme": ("{question}\n{options}\n{instruction}", _MC_FIELDS),
    "mvbench": ("{question}\n{options}\n{instruction}", _MC_FIELDS),
    "egoschema": ("{question}\n{options}\n{instruction}", _MC_FIELDS),
    "synth_grounding": ("{question}", ("question", "duration")),
    "synth_mcq": ("{question}\n{options}\n{instruction}", _MC_FIELDS),
}
# option line format per benchmark (fields: letter, text); vidtempo's MultipleChoiceDataset writes "(A) text",
# TempoSynth's conversations write "A. text".
OPTION_FORMATS: dict[str, str] = {
    "videomme": "({letter}) {text}",
    "mvbench": "({letter}) {text}",
    "egoschema": "({letter}) {text}",
    "synth": "{letter}. {text}",
}


def template_fields(template: str) -> list[str]:
    """The placeholder names of a ``str.format`` template."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(template: Any, name: str) -> str:
    """Validate a prompt template: a string whose placeholders are the fields of ``name``.

    Raises:
        EvalError: not a string, an unknown template name, or an unknown/positional placeholder.
    """
    if name not in PROMPT_TEMPLATES:
        raise EvalError(f"eval.prompts.{name}: unknown template; valid: {', '.join(PROMPT_TEMPLATES)}")
    if not isinstance(template, str) or not template.strip():
        raise EvalError(f"eval.prompts.{name}: expected a non-empty string, got {template!r}")
    allowed = PROMPT_TEMPLATES[name][1]
    try:
        fields = template_fields(template)
    except ValueError as err:
        raise EvalError(f"eval.prompts.{name}: malformed template {template!r}: {err}") from err
    bad = [f for f in fields if f not in allowed]
    if bad:
        raise EvalError(
            f"eval.prompts.{name}: unknown placeholder(s) {bad} in {template!r}; "
            f"valid: {', '.join('{' + a + '}' for a in allowed)}"
        )
    return template


def render_prompt(template: str, name: str, **values: Any) -> str:
    """``<video>`` + newline + the filled template (the template is validated first)."""
    check_template(template, name)
    text = template.format(**values)
    return text if VIDEO_PLACEHOLDER in text else f"{VIDEO_PLACEHOLDER}\n{text}"


def format_option_lines(options: list[str], option_format: str) -> str:
    """``"(A) first\\n(B) second"`` for ``option_format="({letter}) {text}"``."""
    if set(template_fields(option_format)) - {"letter", "text"}:
        raise EvalError(
            f"eval.option_format: only {{letter}} and {{text}} are allowed, got {option_format!r}"
        )
    return "\n".join(option_format.format(letter=LETTERS[i], text=o) for i, o in enumerate(options))


def lettered(options: list[str]) -> tuple[str, ...]:
    """``("A. first", "B. second")``: the option form the scorers read."""
    return tuple(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def _require_file(value: str | None, name: str, what: str) -> Path:
    if not value:
        raise EvalError(
            f"benchmark '{name}' needs {what}: pass --annotations FILE "
            f"or set eval.benchmarks.{name}.annotations in the recipe"
        )
    path = Path(value)
    if not path.exists():
        raise EvalError(f"benchmark '{name}': annotation path {path} does not exist")
    return path


# ------------------------------------------------------------------------------------------ grounding
def _grounding_items(name: str, dataset: Any, template: str) -> list[EvalItem]:
    from vidtempo.data.datasets import GROUNDING_QUESTION

    items = []
    for s in dataset.samples:
        query = s.query.strip().rstrip(".")
        prompt = render_prompt(
            template,
            name,
            question=GROUNDING_QUESTION.format(query=query),
            query=query,
            duration="unknown" if s.duration is None else f"{s.duration:g}",
        )
        items.append(
            EvalItem(
                s.id,
                "grounding",
                s.video,
                prompt,
                (float(s.start), float(s.end)),
                "grounding",
                s.duration,
                meta={"flags": list(s.flags), "query": s.query},
            )
        )
    return items


def load_charades_sta(
    src: BenchmarkSource, prompts: dict[str, str], option_format: str | None
) -> list[EvalItem]:
    """Charades-STA ``VIDEO start end##sentence`` (optional ``durations`` CSV with ``id``/``length``)."""
    from vidtempo.data.datasets import CharadesSTADataset

    path = _require_file(src.annotations, "charades_sta", "a charades_sta_test.txt file")
    ds = CharadesSTADataset(
        path,
        src.video_root or "",
        durations=src.options.get("durations"),
        video_ext=src.options.get("video_ext", ".mp4"),
    )
    return _grounding_items("charades_sta", ds, prompts["charades_sta"])


def load_activitynet(
    src: BenchmarkSource, prompts: dict[str, str], option_format: str | None
) -> list[EvalItem]:
    """ActivityNet Captions ``{vid: {duration, timestamps, sentences}}`` (e.g. ``val_2.json``)."""
    from vidtempo.data.datasets import ActivityNetCaptionsDataset

    path = _require_file(src.annotations, "activitynet_grounding", "an ActivityNet Captions JSON file")
    ds = ActivityNetCaptionsDataset(
        path, src.video_root or "", video_ext=src.options.get("video_ext", ".mp4")
    )
    return _grounding_items("activitynet_grounding", ds, prompts["activitynet_grounding"])


# ------------------------------------------------------------------------------------ multiple choice
def _mc_item(
    name: str, s: Any, template: str, option_format: str, instruction: str, meta: dict[str, Any] | None = None
) -> EvalItem:
    prompt = render_prompt(
        template,
        name,
        question=s.question,
        options=format_option_lines(s.options, option_format),
        instruction=instruction,
        num_options=len(s.options),
    )
    return EvalItem(
        s.id,
        "mcq",
        s.video,
        prompt,
        s.answer,
        s.task,
        meta={**s.meta, **(meta or {})},
        options=lettered(s.options),
    )


def _load_mc(
    name: str, src: BenchmarkSource, prompts: dict[str, str], option_format: str | None, answers: Any = None
) -> list[EvalItem]:
    from vidtempo.data.datasets import MultipleChoiceDataset

    path = _require_file(src.annotations, name, "a multiple-choice JSON/JSONL file")
    ds = MultipleChoiceDataset(
        path, src.video_root or "", answers=answers, video_ext=src.options.get("video_ext", ".mp4")
    )
    labelled = [s for s in ds.samples if s.answer is not None]
    if not labelled:
        hint = (
            " (EgoSchema: set eval.benchmarks.egoschema.answers to subset_answers.json)"
            if name == "egoschema"
            else ""
        )
        raise EvalError(f"{path}: no question has a ground-truth answer, nothing can be scored{hint}")
    fmt = option_format or OPTION_FORMATS[name]
    return [_mc_item(name, s, prompts[name], fmt, MC_INSTRUCTION) for s in labelled]


def load_videomme(src: BenchmarkSource, prompts: dict[str, str], option_format: str | None) -> list[EvalItem]:
    """Video-MME in the official template layout (videos named ``video_id``)."""
    return _load_mc("videomme", src, prompts, option_format)


def load_mvbench(src: BenchmarkSource, prompts: dict[str, str], option_format: str | None) -> list[EvalItem]:
    """MVBench as flat records (``video``, ``question``, ``candidates``/``options``, ``answer``, ``task``)."""
    return _load_mc("mvbench", src, prompts, option_format)


def load_egoschema(
    src: BenchmarkSource, prompts: dict[str, str], option_format: str | None
) -> list[EvalItem]:
    """EgoSchema questions + ``answers`` (public ``subset_answers.json``); unlabelled ones are left out."""
    return _load_mc("egoschema", src, prompts, option_format, answers=src.options.get("answers"))


# ----------------------------------------------------------------------------------------- TempoSynth
def synth_folder(src: BenchmarkSource) -> tuple[Path, str]:
    """(TempoSynth root, split folder name); accepts the root, ``manifest.json`` or a split folder."""
    path = _require_file(src.annotations, "synth", "a TempoSynth folder (from `vidtempo data synth`)")
    split = str(src.options.get("split", "test"))
    if path.is_file() and path.name == "manifest.json":
        path = path.parent
    if (path / "mcq.jsonl").is_file() and path.parent.name == "annotations":  # a split folder
        return path.parent.parent, path.name
    if not (path / "annotations" / split).is_dir():
        raise EvalError(
            f"{path}: not a TempoSynth folder with an 'annotations/{split}/' split "
            "(generate one with `vidtempo data synth --out DIR --num-videos N`)"
        )
    return path, split


def load_synth(src: BenchmarkSource, prompts: dict[str, str], option_format: str | None) -> list[EvalItem]:
    """TempoSynth split: grounding items from ``conversations.jsonl`` (the training question) and the
    4-option questions of ``mcq.jsonl`` (with ``order_dependent`` / ``alignment_dependent`` flags)."""
    from vidtempo.data.datasets import ConversationDataset, MultipleChoiceDataset, load_records

    root, split = synth_folder(src)
    folder = root / "annotations" / split
    video_root = src.video_root or str(root)
    items = []
    for s in ConversationDataset(folder / "conversations.jsonl", video_root).samples:
        if s.meta.get("task") != "grounding":
            continue
        question = s.messages[0]["content"].replace(VIDEO_PLACEHOLDER, "").strip()
        start, end = s.meta["timestamps"]
        duration = float(s.meta["duration"])
        prompt = render_prompt(
            prompts["synth_grounding"], "synth_grounding", question=question, duration=f"{duration:g}"
        )
        items.append(
            EvalItem(
                s.id,
                "grounding",
                s.video or "",
                prompt,
                (float(start), float(end)),
                "grounding",
                duration,
                meta={"order_dependent": True},
            )
        )
    raw = {str(r["id"]): r for r in load_records(folder / "mcq.jsonl")}  # type: ignore[union-attr]
    fmt = option_format or OPTION_FORMATS["synth"]
    for s in MultipleChoiceDataset(folder / "mcq.jsonl", video_root).samples:
        rec = raw[s.id]
        flags = {k: bool(rec.get(k, False)) for k in ("order_dependent", "alignment_dependent")}
        item = _mc_item("synth_mcq", s, prompts["synth_mcq"], fmt, MC_INSTRUCTION, flags)
        item.duration = float(rec["duration"]) if "duration" in rec else None
        items.append(item)
    return items


# ------------------------------------------------------------------------------------------ registry
STRICT_POLICY = "vidtempo parse_interval / parse_choice; unparsable = wrong, kept in the denominator"
Raws = dict[str, dict[str, Any]]  # condition -> item id -> raw answer (None: no answer)


@dataclass(frozen=True)
class BenchmarkSpec:
    """A runnable benchmark: its loader, the prompt templates it uses, the conditions its items run under and
    the metrics of its report. The runner calls only these members; a benchmark with its own needs
    (TempoSynth's controls and per-task limit) is a subclass that overrides them.

    Example:
        >>> spec = get_benchmark("videomme")
        >>> spec.conditions(("time", "blind")), spec.limit_per_task
        (('normal',), False)
        >>> get_benchmark("synth").conditions(("time", "blind"))
        ('normal', 'time', 'blind')
    """

    name: str
    kind: str  # "grounding", "mcq", "retrieval" or "synth" (descriptive; behaviour lives in the methods)
    load: Callable[[BenchmarkSource, dict[str, str], str | None], list[EvalItem]] | None
    templates: tuple[str, ...]
    description: str
    limit_per_task: ClassVar[bool] = False  # --limit N keeps N items of each task (else N items in all)

    def conditions(self, controls: Sequence[str]) -> tuple[str, ...]:
        """The conditions every item is run under (``normal``: the inputs as they are)."""
        return ("normal",)

    def report_metrics(
        self, items: Sequence[EvalItem], conditions: Sequence[str], raws: Raws, control_seed: int
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(report entries, scoring policy) from the raw answers of every condition."""
        metrics = benchmark_metrics(self.name, items, raws["normal"])
        return {"metrics": metrics}, {"strict": STRICT_POLICY, "official": self.official_policy(metrics)}

    def official_policy(self, metrics: dict[str, Any]) -> str:
        """The name of the official scorer's policy the report states."""
        return official_mc_policy(self.name)


class GroundingSpec(BenchmarkSpec):
    """A temporal-grounding benchmark: the official policy is the one its grounding report names."""

    def official_policy(self, metrics: dict[str, Any]) -> str:
        return metrics["official_policy"]


SYNTH_CONTROLS = {
    "time": "frames and audio windows permuted in time (seeded, per item), timestamps kept in order",
    "blind": "zero frames, silent audio",
}


class SynthSpec(BenchmarkSpec):
    """TempoSynth: every item also runs under the recipe's controls (``eval.controls``), ``--limit`` counts per
    task, and the report has per-condition metrics, chance levels and the order-dependent tasks."""

    limit_per_task: ClassVar[bool] = True

    def conditions(self, controls: Sequence[str]) -> tuple[str, ...]:
        return ("normal", *controls)

    def report_metrics(
        self, items: Sequence[EvalItem], conditions: Sequence[str], raws: Raws, control_seed: int
    ) -> tuple[dict[str, Any], dict[str, str]]:
        entries = {
            "conditions": list(conditions),
            "metrics": {c: synth_condition_metrics(items, raws[c]) for c in conditions},
            "chance": synth_chance(items, control_seed),
            "order_dependent_tasks": {
                i.task: bool(i.meta.get("order_dependent")) for i in items if i.kind == "mcq"
            },
            "controls": {**SYNTH_CONTROLS, "seed": control_seed},
        }
        return entries, {"strict": STRICT_POLICY, "official": "same as strict (no external scorer)"}


BENCHMARKS: dict[str, BenchmarkSpec] = {
    b.name: b
    for b in (
        GroundingSpec(
            "charades_sta",
            "grounding",
            load_charades_sta,
            ("charades_sta",),
            "Charades-STA temporal grounding (R1@0.3/0.5/0.7, mIoU)",
        ),
        GroundingSpec(
            "activitynet_grounding",
            "grounding",
            load_activitynet,
            ("activitynet_grounding",),
            "ActivityNet Captions grounding (R1@0.3/0.5/0.7, mIoU)",
        ),
        # retrieval: vidtempo.eval.retrieval embeds videos and texts (no items, no generation)
        BenchmarkSpec(
            "msrvtt_retrieval", "retrieval", None, (), "MSR-VTT text-video retrieval (embed_video/text)"
        ),
        BenchmarkSpec(
            "msvd_retrieval", "retrieval", None, (), "MSVD text-video retrieval (embed_video/text)"
        ),
        BenchmarkSpec(
            "synth_retrieval", "retrieval", None, (), "TempoSynth caption retrieval (embed_video/text)"
        ),
        BenchmarkSpec("videomme", "mcq", load_videomme, ("videomme",), "Video-MME multiple choice"),
        BenchmarkSpec("mvbench", "mcq", load_mvbench, ("mvbench",), "MVBench multiple choice (task mean)"),
        BenchmarkSpec("egoschema", "mcq", load_egoschema, ("egoschema",), "EgoSchema public subset"),
        SynthSpec(
            "synth",
            "synth",
            load_synth,
            ("synth_grounding", "synth_mcq"),
            "TempoSynth test split: grounding + per-task MCQ, with time and blind controls",
        ),
    )
}


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec of ``name``; an unknown name raises :class:`EvalError` listing the valid ones."""
    if name not in BENCHMARKS:
        raise EvalError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def default_prompts() -> dict[str, str]:
    """Every built-in template, by template name."""
    return {k: v[0] for k, v in PROMPT_TEMPLATES.items()}
