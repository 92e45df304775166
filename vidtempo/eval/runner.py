"""The evaluation runner behind ``vidtempo eval``: one checkpoint x one benchmark x one recipe.

This module only wires the steps; each lives in its own module:

* :mod:`vidtempo.eval.settings`: the recipe's ``eval:`` section (:class:`EvalSettings`).
* :mod:`vidtempo.eval.benchmarks`: the benchmark specs: items, conditions (TempoSynth's controls) and the
  report's metrics.
* :mod:`vidtempo.eval.generation_log`: the resumable ``generations.jsonl`` (one row per condition and item:
  id, prompt, raw generation, parsed answer, ground truth, score, ``skipped``) and ``run.json`` (a re-run with
  other settings refuses to mix its rows with the old ones; ``fresh=True`` starts over).
* :mod:`vidtempo.eval.generation`: batched greedy generation (and LVCoT); :mod:`vidtempo.eval.likelihood`:
  multiple choice by option likelihood.
* :mod:`vidtempo.eval.report`: ``report.json``: strict and official metrics, policies, prompts, frame
  sampling, decoder, checkpoint, recipe hash (sha256 of the resolved recipe YAML), version, counts.

Example:
    >>> limit_items([], None, per_task=False)
    []
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidtempo.eval.benchmarks import EvalError, EvalItem, get_benchmark
from vidtempo.eval.generation import Job, generate_texts, load_model, run_generation
from vidtempo.eval.generation_log import GENERATIONS, RUN_META, GenerationLog, check_resume, run_meta
from vidtempo.eval.plots import grounding_pictures
from vidtempo.eval.report import REPORT, build_report, write_json
from vidtempo.eval.retrieval import run_retrieval
from vidtempo.eval.settings import EvalSettings


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
        limit: keep the first N items (of each task for a spec with ``limit_per_task``, e.g. ``synth``).
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
    if spec.kind == "retrieval":  # embeddings, not generations (vidtempo.eval.retrieval)
        out = Path(out_dir) if out_dir else Path(container.get("output_dir") or "runs") / "eval" / benchmark
        report = run_retrieval(benchmark, source, settings, Path(checkpoint), out, digest, limit)
        return EvalResult(report, out, report["counts"]["generated_this_run"])
    items = limit_items(
        spec.load(source, settings.prompts, settings.option_format),  # type: ignore[misc]
        limit,
        per_task=spec.limit_per_task,
    )
    if not items:
        raise EvalError(f"benchmark '{benchmark}': no items to evaluate in {source.annotations}")
    out = Path(out_dir) if out_dir else Path(container.get("output_dir") or "runs") / "eval" / benchmark
    ckpt = Path(checkpoint)
    check_resume(out, run_meta(benchmark, ckpt, settings, source, spec.templates), fresh)
    conditions = spec.conditions(settings.controls)
    gen_log = GenerationLog(out / GENERATIONS)
    done = {k for k, row in gen_log.read().items() if not row.get("skipped")}
    jobs = [Job(c, [i for i in items if (c, i.id) not in done]) for c in conditions]
    jobs = [j for j in jobs if j.items]
    generate = run_generation
    if settings.processes > 1:  # the batches shared among CPU processes: the same rows
        from vidtempo.eval.parallel import run_parallel as generate
    generated = generate(jobs, benchmark, str(ckpt), settings, gen_log, progress=progress) if jobs else 0
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
    write_json(out / REPORT, report)
    return EvalResult(report, out, generated)


__all__ = [
    "GENERATIONS",
    "REPORT",
    "RUN_META",
    "EvalError",
    "EvalResult",
    "EvalSettings",
    "GenerationLog",
    "build_report",
    "generate_texts",
    "get_benchmark",
    "limit_items",
    "load_model",
    "recipe_hash",
    "run_eval",
    "run_generation",
]
