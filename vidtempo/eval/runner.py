"""The evaluation runner behind ``vidtempo eval``: batched greedy generation, resumable logs, reports.

One run = one checkpoint x one benchmark x one recipe. It writes into ``out_dir``:

* ``generations.jsonl``: one row per (condition, item): id, prompt, raw generation, parsed answer, ground
  truth, per-item score, and ``skipped`` (path and reason) when the video could not be decoded. Rows are
  appended and flushed after every batch; a re-run regenerates only the items that have no row yet (and
  retries skipped ones).
* ``run.json``: the settings that decide the generations (checkpoint, prompts, frames, decoder, ...). A
  re-run with different settings refuses to mix its rows with the old ones (``fresh=True`` starts over).
* ``report.json``: strict and official metrics, the policies, prompts, frame sampling, decoder, checkpoint,
  recipe hash (sha256 of the resolved recipe YAML), vidtempo version, counts and skipped items.

Evaluation settings live under the recipe's top-level ``eval:`` section (all optional)::

    eval:
      batch_size: 8          # items per generate() call
      num_workers: 2         # DataLoader workers decoding videos
      max_new_tokens: 32
      device: auto           # auto = cuda when available, else cpu
      collator: {}           # overrides of data.collator (num_frames, fps, frame_size, backend, audio, ...)
      prompts: {}            # template name -> template (see vidtempo.eval.benchmarks)
      option_format: null    # e.g. "({letter}) {text}"; null = the benchmark's default
      controls: [time, blind]  # synth only
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

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidtempo import __version__
from vidtempo.eval.benchmarks import (
    BenchmarkSource,
    EvalError,
    EvalItem,
    check_template,
    default_prompts,
    get_benchmark,
)
from vidtempo.eval.choice_scoring import MCQ_ANSWER, MCQ_SCORING, choice_batches, pick_options
from vidtempo.eval.controls import CONTROLS, ControlledCollator
from vidtempo.eval.plots import grounding_pictures
from vidtempo.eval.results import (
    benchmark_metrics,
    official_mc_policy,
    score_item,
    synth_chance,
    synth_condition_metrics,
)

log = logging.getLogger(__name__)

GENERATIONS = "generations.jsonl"
REPORT = "report.json"
RUN_META = "run.json"
EVAL_KEYS = {
    "batch_size",
    "num_workers",
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
REPORTED_COLLATOR_KEYS = (
    "num_frames",
    "fps",
    "max_frames",
    "frame_size",
    "backend",
    "audio",
    "sample_rate",
    "system_prompt",
)


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
    """

    batch_size: int = 8
    num_workers: int = 2
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
        data = _mapping(cfg.get("data"), "data")
        collator = {
            **_mapping(data.get("collator"), "data.collator"),
            **_mapping(section.get("collator"), "eval.collator"),
            "generation": True,
        }
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


# ---------------------------------------------------------------------------------------- generations log
class GenerationLog:
    """``generations.jsonl``: append rows per batch (flushed), read them back keyed by (condition, id).

    A last line cut short by a crash is ignored (with a warning); any other malformed line is an error that
    names the file and the line. When an item has several rows the last one wins.

    Example:
        >>> import tempfile
        >>> gl = GenerationLog(Path(tempfile.mkdtemp()) / "generations.jsonl")
        >>> gl.append([{"id": "a", "condition": "normal", "raw": "B"}])
        >>> gl.read()[("normal", "a")]["raw"]
        'B'
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[tuple[str, str], dict[str, Any]]:
        if not self.path.is_file():
            return {}
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        lines = self.path.read_text(encoding="utf-8").split("\n")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = (str(row["condition"]), str(row["id"]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                if n == len(lines) or (n == len(lines) - 1 and not lines[-1]):
                    log.warning("%s: ignoring a truncated last line (interrupted run)", self.path)
                    continue
                raise EvalError(
                    f"{self.path}: line {n} is not a generation row ({err!r}); delete the file or use --fresh"
                ) from err
            rows[key] = row
        return rows

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append rows and flush them to disk; a partial last line left by a crash is cut off first."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_tail()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def _drop_partial_tail(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, "r+b") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                log.warning("%s: dropping a truncated last line (interrupted run)", self.path)
                f.truncate(data.rfind(b"\n") + 1)


# --------------------------------------------------------------------------------------------- generation
def generate_texts(model: Any, tokenizer: Any, batch: Any, max_new_tokens: int) -> list[str]:
    """Greedy answers for one collated batch, decoded and stripped (one string per row of ``batch``)."""
    import torch

    with torch.no_grad():
        new = model.generate(**batch.model_inputs(with_labels=False), max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             do_sample=False)  # fmt: skip
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def load_model(checkpoint: str, device: Any) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, tokenizer) from a checkpoint directory."""
    from vidtempo.models.checkpoint import load_pretrained

    model, tokenizer, _ = load_pretrained(checkpoint)
    if tokenizer is None:
        raise EvalError(f"{checkpoint}: the checkpoint has no tokenizer files (tokenizer_config.json)")
    return model.to(device).eval(), tokenizer


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _row(
    item: EvalItem,
    condition: str,
    benchmark: str,
    raw: str | None,
    skipped: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    scored = score_item(item, raw, benchmark)
    return {
        "id": item.id,
        "condition": condition,
        "task": item.task,
        "kind": item.kind,
        "video": item.video,
        "prompt": item.prompt,
        "raw": raw,
        "parsed": scored["parsed"],
        "ground_truth": item.ground_truth(),
        "score": scored["score"],
        "skipped": skipped,
        **(extra or {}),
    }


@dataclass
class _Job:
    condition: str
    items: list[EvalItem]


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def run_generation(
    jobs: Sequence[_Job],
    benchmark: str,
    checkpoint: str,
    settings: EvalSettings,
    out_log: GenerationLog,
    *,
    progress: bool = True,
) -> int:
    """Generate every pending item of every job (condition); rows go to ``out_log`` batch by batch.

    Returns:
        The number of rows written.
    """
    from torch.utils.data import DataLoader

    from vidtempo.data.collate import VideoCollator

    device = _device(settings.device)
    model, tokenizer = load_model(checkpoint, device)
    collate = VideoCollator(tokenizer, **settings.collator)
    written = 0
    with _progress(progress) as bar:
        task = bar.add_task(f"eval {benchmark}", total=sum(len(j.items) for j in jobs), note="")
        for job in jobs:
            by_id = {i.id: i for i in job.items}
            controlled = ControlledCollator(collate, job.condition, settings.control_seed)
            by_likelihood = {i.id for i in job.items if settings.mcq_scoring == "likelihood" and i.kind == "mcq"}
            scored = [i for i in job.items if i.id in by_likelihood]
            samples = [i.sample() for i in job.items if i.id not in by_likelihood]
            if settings.lvcot is not None:  # segment descriptions need the model: batches built here
                batches = _lvcot_batches(model, tokenizer, controlled, samples, settings)
            else:
                loader = DataLoader(samples, batch_size=settings.batch_size, shuffle=False,
                                    num_workers=settings.num_workers, collate_fn=controlled)  # fmt: skip
                batches = ((b, {}) for b in loader)
            for batch, extras in batches:
                texts = (
                    generate_texts(model, tokenizer, batch.to(device), settings.max_new_tokens)
                    if len(batch)
                    else []
                )
                rows = [
                    _row(by_id[i], job.condition, benchmark, t, extra={**_perm(meta), **extras.get(i, {})})
                    for i, t, meta in zip(batch.ids, texts, batch.meta)
                ]
                rows += _skipped_rows(batch.skipped, by_id, job.condition, benchmark, extras)
                out_log.append(rows)
                written += len(rows)
                bar.update(task, advance=len(rows), note=job.condition)
            for rows in _likelihood_rows(model, tokenizer, scored, job.condition, benchmark, settings, device):
                out_log.append(rows)
                written += len(rows)
                bar.update(task, advance=len(rows), note=f"{job.condition} (likelihood)")
    return written


def _skipped_rows(skipped: Sequence[Any], by_id: dict[str, EvalItem], condition: str, benchmark: str,
                  extras: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of items whose clip could not be decoded (one per item, even when several rows shared it)."""
    once = {s.id: s for s in skipped}
    return [
        _row(by_id[i], condition, benchmark, None, {"path": s.path, "reason": s.reason}, extras.get(i))
        for i, s in once.items()
    ]


def _likelihood_rows(
    model: Any,
    tokenizer: Any,
    items: list[EvalItem],
    condition: str,
    benchmark: str,
    settings: EvalSettings,
    device: Any,
) -> Iterable[list[dict[str, Any]]]:
    """Rows of multiple-choice ``items`` answered by option likelihood (:mod:`vidtempo.eval.choice_scoring`),
    one list per batch of ``settings.batch_size`` items; undecodable clips give skipped rows."""
    from vidtempo.data.collate import VideoCollator

    if not items:
        return
    collate = ControlledCollator(VideoCollator(tokenizer, **{**settings.collator, "generation": False}),
                                 condition, settings.control_seed)  # fmt: skip
    by_id = {i.id: i for i in items}
    for chunk, batch in choice_batches(items, settings.mcq_answer, collate, settings.batch_size):
        picked = pick_options(model, chunk, batch.to(device), settings.mcq_answer) if len(batch) else {}
        perms = {i: _perm(meta) for i, meta in zip(batch.ids, batch.meta)}
        rows = [_row(item, condition, benchmark, picked[item.id]["raw"],
                     extra={**perms.get(item.id, {}), "option_logprobs": picked[item.id]["option_logprobs"]})
                for item in chunk if item.id in picked]  # fmt: skip
        yield rows + _skipped_rows(batch.skipped, by_id, condition, benchmark, {})


def _lvcot_batches(
    model: Any, tokenizer: Any, collate: Any, samples: list[Any], settings: EvalSettings
) -> Iterable[tuple[Any, dict[str, dict[str, Any]]]]:
    """(final batch, {item id: {"lvcot": record}}) per ``batch_size`` items: LVCoT runs on the segments
    (through the same control collator, so controls reach the descriptions too), then the answers' batch."""
    from dataclasses import replace

    from vidtempo.inference.lvcot import run_lvcot

    for k in range(0, len(samples), settings.batch_size):
        chunk = samples[k : k + settings.batch_size]
        results = run_lvcot(model, tokenizer, collate, chunk, settings.lvcot, batch_size=settings.batch_size)
        final = [replace(s, messages=r.messages) for s, r in zip(chunk, results)]
        yield collate(final), {s.id: {"lvcot": r.record()} for s, r in zip(chunk, results)}


def _perm(meta: dict[str, Any]) -> dict[str, Any]:
    return {"time_permutation": meta["time_permutation"]} if "time_permutation" in meta else {}


# -------------------------------------------------------------------------------------------------- run
@dataclass
class EvalResult:
    """What :func:`run_eval` produced: the report (also in ``out_dir/report.json``) and counts."""

    report: dict[str, Any]
    out_dir: Path
    generated: int


def recipe_hash(cfg: Any) -> tuple[str, str]:
    """(sha256 hex of the resolved recipe YAML, that YAML)."""
    from vidtempo.config.load import to_yaml

    text = to_yaml(cfg)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), text


def _checkpoint_fingerprint(checkpoint: Path) -> dict[str, Any]:
    if not (checkpoint / "vidtempo.json").is_file():
        raise EvalError(f"{checkpoint} is not a vidtempo checkpoint (vidtempo.json is missing)")
    weights = checkpoint / "model.safetensors"
    stat = weights.stat() if weights.is_file() else None
    return {
        "path": str(checkpoint.resolve()),
        "weights_bytes": stat.st_size if stat else None,
        "weights_mtime": stat.st_mtime if stat else None,
    }


def _run_meta(
    benchmark: str,
    checkpoint: Path,
    settings: EvalSettings,
    source: BenchmarkSource,
    templates: Sequence[str],
) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "checkpoint": _checkpoint_fingerprint(checkpoint),
        "annotations": source.annotations, "video_root": source.video_root, "source_options": source.options,
        "collator": settings.collator, "prompts": {t: settings.prompts[t] for t in templates},
        "option_format": settings.option_format, "max_new_tokens": settings.max_new_tokens,
        "control_seed": settings.control_seed,
        "lvcot": settings.lvcot.to_dict() if settings.lvcot is not None else None,
        **({"mcq_scoring": settings.mcq_scoring, "mcq_answer": settings.mcq_answer}
           if settings.mcq_scoring != "generate" else {}),
    }  # fmt: skip


def _check_resume(out_dir: Path, meta: dict[str, Any], fresh: bool) -> None:
    path, gens = out_dir / RUN_META, out_dir / GENERATIONS
    if fresh:
        gens.unlink(missing_ok=True)
    elif gens.is_file() and path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(
            k
            for k in set(old) | set(meta)
            if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(meta.get(k), sort_keys=True, default=str)
        )
        if diff:
            raise EvalError(
                f"{gens} was written with different settings ({', '.join(diff)} changed); "
                "use --fresh to start over or another --out"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1, default=str) + "\n")


def limit_items(items: list[EvalItem], limit: int | None, per_task: bool) -> list[EvalItem]:
    """The first ``limit`` items (of each task when ``per_task``)."""
    if limit is None:
        return items
    if limit < 1:
        raise EvalError(f"--limit must be a positive integer, got {limit}")
    if not per_task:
        return items[:limit]
    seen: dict[str, int] = {}
    kept = []
    for item in items:
        seen[item.task] = seen.get(item.task, 0) + 1
        if seen[item.task] <= limit:
            kept.append(item)
    return kept


def run_eval(
    recipe: str | Path,
    checkpoint: str | Path,
    benchmark: str,
    *,
    overrides: Sequence[str] = (),
    annotations: str | None = None,
    video_root: str | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    settings_overrides: dict[str, Any] | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``checkpoint`` on ``benchmark``; see the module docstring for the outputs.

    Args:
        recipe: recipe YAML (``data.collator`` and ``eval:`` are read).
        checkpoint: directory written by ``save_pretrained``.
        benchmark: a name of :data:`vidtempo.eval.benchmarks.BENCHMARKS`.
        overrides: recipe overrides (``key=value``).
        annotations, video_root: data location (over ``eval.benchmarks.<name>``).
        limit: keep the first N items (for ``synth``: of each task).
        out_dir: output folder (default ``<output_dir>/eval/<benchmark>``, or ``runs/eval/<benchmark>``).
        settings_overrides: ``eval`` keys set from the command line (``batch_size``, ...).
        fresh: discard earlier generations in ``out_dir``.
        progress: show a rich progress bar.

    Raises:
        EvalError: bad settings, missing annotations, unsupported benchmark for this model, resume mismatch.
        RecipeError: an unreadable recipe or a bad override.
    """
    from omegaconf import OmegaConf

    from vidtempo.config.load import load_recipe, resolve_recipe

    cfg = load_recipe(recipe, list(overrides))
    container: dict[str, Any] = OmegaConf.to_container(resolve_recipe(cfg))  # type: ignore[assignment]
    if settings_overrides:
        container["eval"] = {**(container.get("eval") or {}), **settings_overrides}
    settings = EvalSettings.from_recipe(container)
    digest, _ = recipe_hash(cfg)
    spec = get_benchmark(benchmark)
    source = settings.source(benchmark, annotations, video_root)
    items = limit_items(
        spec.load(source, settings.prompts, settings.option_format),
        limit,  # type: ignore[misc]
        per_task=spec.kind == "synth",
    )
    if not items:
        raise EvalError(f"benchmark '{benchmark}': no items to evaluate in {source.annotations}")
    out = Path(out_dir) if out_dir else Path(container.get("output_dir") or "runs") / "eval" / benchmark
    ckpt = Path(checkpoint)
    _check_resume(out, _run_meta(benchmark, ckpt, settings, source, spec.templates), fresh)
    conditions = ("normal", *settings.controls) if spec.kind == "synth" else ("normal",)
    gen_log = GenerationLog(out / GENERATIONS)
    done = {k for k, row in gen_log.read().items() if not row.get("skipped")}
    jobs = [_Job(c, [i for i in items if (c, i.id) not in done]) for c in conditions]
    jobs = [j for j in jobs if j.items]
    generated = (
        run_generation(jobs, benchmark, str(ckpt), settings, gen_log, progress=progress) if jobs else 0
    )
    report = build_report(
        benchmark,
        items,
        conditions,
        gen_log.read(),
        settings,
        source,
        ckpt,
        digest,
        {"generated_this_run": generated, "resumed": len(items) * len(conditions) - generated},
    )
    pictures = grounding_pictures(list(gen_log.read().values()), out)
    report["pictures"] = [p.name for p in pictures]
    _write_json(out / REPORT, report)
    return EvalResult(report, out, generated)


def build_report(
    benchmark: str,
    items: Sequence[EvalItem],
    conditions: Sequence[str],
    rows: dict[tuple[str, str], dict[str, Any]],
    settings: EvalSettings,
    source: BenchmarkSource,
    checkpoint: Path,
    digest: str,
    counts: dict[str, int],
) -> dict[str, Any]:
    """``report.json`` content from the logged rows (metrics recomputed from the raw generations)."""
    spec = get_benchmark(benchmark)
    raws = {c: {i.id: (rows.get((c, i.id)) or {}).get("raw") for i in items} for c in conditions}
    missing = [f"{c}/{i.id}" for c in conditions for i in items if (c, i.id) not in rows]
    if missing:
        raise EvalError(f"{len(missing)} items have no generation row, e.g. {missing[:3]}")
    skipped = [
        {"id": i.id, "condition": c, **rows[(c, i.id)]["skipped"]}
        for c in conditions
        for i in items
        if rows[(c, i.id)].get("skipped")
    ]
    report: dict[str, Any] = {
        "benchmark": benchmark,
        "description": spec.description,
        "num_items": len(items),
    }
    if spec.kind == "synth":
        report["conditions"] = list(conditions)
        report["metrics"] = {c: synth_condition_metrics(items, raws[c]) for c in conditions}
        report["chance"] = synth_chance(items, settings.control_seed)
        report["order_dependent_tasks"] = {
            i.task: bool(i.meta.get("order_dependent")) for i in items if i.kind == "mcq"
        }
        report["controls"] = {
            "time": "frames and audio windows permuted in time (seeded, per item), timestamps kept in order",
            "blind": "zero frames, silent audio",
            "seed": settings.control_seed,
        }
        policy = {
            "strict": "vidtempo parse_interval / parse_choice; unparsable = wrong, kept in the denominator",
            "official": "same as strict (no external scorer)",
        }
    else:
        report["metrics"] = benchmark_metrics(benchmark, items, raws["normal"])
        official = report["metrics"]["official_policy"]
        policy = {
            "strict": "vidtempo parse_interval / parse_choice; unparsable = wrong, kept in the denominator",
            "official": official if spec.kind == "grounding" else official_mc_policy(benchmark),
        }
    if settings.mcq_scoring == "likelihood":
        policy["mcq_scoring"] = (f"likelihood: each multiple-choice answer is the option whose {settings.mcq_answer} "
                                 "has the highest summed log-probability as the answer (not generated)")
    collator = settings.collator
    report.update({
        "policy": {**policy, "skipped_videos": "scored as unanswered (kept in the denominator by strict)"},
        "prompt_templates": {t: settings.prompts[t] for t in spec.templates},
        "option_format": settings.option_format,
        "generation": {"greedy": True, "max_new_tokens": settings.max_new_tokens,
                       "batch_size": settings.batch_size, "mcq_scoring": settings.mcq_scoring,
                       **({"mcq_answer": settings.mcq_answer} if settings.mcq_scoring == "likelihood" else {})},
        "frames": {k: collator.get(k) for k in REPORTED_COLLATOR_KEYS if k in collator},
        "decoder": collator.get("backend", "pyav"),
        "lvcot": _lvcot_report(settings, [rows[(c, i.id)] for c in conditions for i in items]),
        "checkpoint": str(checkpoint.resolve()),
        "annotations": source.annotations, "video_root": source.video_root,
        "recipe_sha256": digest,
        "vidtempo_version": __version__,
        "counts": {**counts, "items": len(items), "conditions": len(conditions), "skipped": len(skipped)},
        "skipped": skipped,
    })  # fmt: skip
    return report


def _lvcot_report(settings: EvalSettings, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """LVCoT settings and how many rows were answered with segment descriptions (None when off)."""
    if settings.lvcot is None:
        return None
    records = [r.get("lvcot") or {} for r in rows]
    return {**settings.lvcot.to_dict(), "rows_with_segments": sum(bool(r.get("segments")) for r in records),
            "rows_direct": sum(not r.get("segments") for r in records)}  # fmt: skip


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


__all__ = [
    "EvalError",
    "EvalResult",
    "EvalSettings",
    "GenerationLog",
    "build_report",
    "generate_texts",
    "run_eval",
    "run_generation",
]
