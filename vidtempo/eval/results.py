"""From raw generations to numbers: per-item scores, benchmark metrics, chance levels and result tables.

Everything here calls the scorers of :mod:`vidtempo.eval.scorers` (nothing is re-implemented): a row of
``generations.jsonl`` keeps the raw text, and the report is recomputed from the raw texts on every run.

Example:
    >>> from vidtempo.eval.items import EvalItem
    >>> item = EvalItem("q", "grounding", "v.mp4", "<video>\\nWhen?", (2.0, 4.0), "grounding", 10.0)
    >>> score_item(item, "from 2 to 4 seconds", "charades_sta")["score"]["iou"]
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vidtempo.eval.items import EvalItem
from vidtempo.eval.metrics import grounding_ious, summarize_ious, temporal_iou
from vidtempo.eval.scorers import (
    MC_BENCHMARKS,
    MC_POLICIES,
    GroundingRecord,
    MCRecord,
    first_interval,
    grounding_report,
    judge_choice,
    multiple_choice_report,
    score_grounding,
    score_multiple_choice,
)

THRESHOLDS = (0.3, 0.5, 0.7)
CHANCE_DRAWS = 200  # random intervals per grounding query for the chance level
SYNTH_POLICY = "strict (TempoSynth has no external scorer: official = strict)"


def official_mc_policy(benchmark: str) -> str:
    """The official multiple-choice policy name of a benchmark (``strict`` for ``synth``)."""
    return MC_BENCHMARKS[benchmark][0] if benchmark in MC_BENCHMARKS else "strict"


def score_item(item: EvalItem, raw: str | None, benchmark: str) -> dict[str, Any]:
    """``{"parsed", "score"}`` of one generation (``raw=None``: no generation, e.g. an undecodable video).

    Grounding: the first interval (:func:`~vidtempo.eval.scorers.first_interval`) and its IoU. Multiple
    choice:
    the strict letter and correctness, and those of the benchmark's official policy.
    """
    if item.kind == "grounding":
        pred = first_interval(raw)
        iou = temporal_iou(pred, item.answer)
        return {
            "parsed": list(pred) if pred else None,
            "score": {"iou": iou, **{f"R1@{m:g}": iou >= m - 1e-9 for m in THRESHOLDS}},
        }
    record = _mc_record(item, raw)
    strict = judge_choice(record, MC_POLICIES["strict"])
    official = judge_choice(record, MC_POLICIES[official_mc_policy(benchmark)])
    return {
        "parsed": strict.parsed,
        "score": {
            "correct": strict.correct,
            "official_parsed": official.parsed,
            "official_correct": official.correct,
            "official_counted": official.counted,
        },
    }


def _mc_record(item: EvalItem, raw: str | None) -> MCRecord:
    return MCRecord(
        prediction=raw,
        answer=item.answer,
        options=item.options,
        task=item.task,
        duration=str(item.meta.get("video_duration", "")),
        category=str(item.meta.get("video_domain", "")),
        id=item.id,
    )


def _grounding_record(item: EvalItem, raw: str | None) -> GroundingRecord:
    return GroundingRecord(gt=item.answer, prediction=raw, duration=item.duration, id=item.id)


def _drop_items(report: Any) -> Any:
    """A report without its per-item lists (those live in ``generations.jsonl``)."""
    if isinstance(report, dict):
        return {k: _drop_items(v) for k, v in report.items() if k != "items"}
    return report


def benchmark_metrics(
    benchmark: str, items: Sequence[EvalItem], raws: dict[str, str | None]
) -> dict[str, Any]:
    """Strict and official metrics of a grounding or multiple-choice benchmark (percentages).

    Args:
        benchmark: benchmark name.
        items: the evaluated items.
        raws: item id -> raw generation (``None`` for an item without one; it scores as unparsable).
    """
    kinds = {i.kind for i in items}
    if kinds == {"grounding"}:
        return _drop_items(grounding_report([_grounding_record(i, raws.get(i.id)) for i in items], benchmark))
    records = [_mc_record(i, raws.get(i.id)) for i in items]
    num_options = 5 if benchmark == "egoschema" else None
    report = _drop_items(multiple_choice_report(records, benchmark, num_options=num_options))
    if benchmark == "egoschema":
        report["notes"].append("public subset with labels, generation + letter parsing (not MC-PPL)")
    return report


# ------------------------------------------------------------------------------------------ TempoSynth
def synth_condition_metrics(items: Sequence[EvalItem], raws: dict[str, str | None]) -> dict[str, Any]:
    """Grounding (R1@m, mIoU) and multiple choice (overall, per task, order-dependent or not)."""
    out: dict[str, Any] = {}
    grounding = [i for i in items if i.kind == "grounding"]
    if grounding:
        g = _drop_items(score_grounding([_grounding_record(i, raws.get(i.id)) for i in grounding], "strict"))
        out["grounding"] = {"strict": g, "official": g, "official_policy": SYNTH_POLICY}
    mcq = [i for i in items if i.kind == "mcq"]
    if mcq:
        records = [_mc_record(i, raws.get(i.id)) for i in mcq]
        m = _drop_items(score_multiple_choice(records, "strict"))
        subsets = {}
        for flag in (True, False):
            sub = [r for r, i in zip(records, mcq) if bool(i.meta.get("order_dependent")) == flag]
            if sub:
                subsets["order_dependent" if flag else "order_independent"] = _drop_items(
                    score_multiple_choice(sub, "strict")
                )
        out["mcq"] = {"strict": m, "official": m, "official_policy": SYNTH_POLICY, "subsets": subsets}
    return out


def grounding_chance(items: Sequence[EvalItem], seed: int = 0, draws: int = CHANCE_DRAWS) -> dict[str, float]:
    """Expected R1@m / mIoU (percent) of an interval drawn uniformly inside the video (two sorted uniform
    points in ``[0, duration]``), estimated with ``draws`` seeded draws per query."""
    rng = np.random.default_rng([int(seed), 0xC4A1])
    preds, gts, durations = [], [], []
    for item in items:
        duration = item.duration if item.duration and item.duration > 0 else max(item.answer[1], 1e-3)
        points = np.sort(rng.uniform(0.0, duration, size=(draws, 2)), axis=1)  # (draws, 2)
        preds.extend(tuple(p) for p in points.tolist())
        gts.extend([item.answer] * draws)
        durations.extend([duration] * draws)
    summary = summarize_ious(grounding_ious(preds, gts, durations=durations), THRESHOLDS)
    return {k: 100.0 * v for k, v in summary.items()}


def synth_chance(items: Sequence[EvalItem], seed: int = 0) -> dict[str, Any]:
    """Chance levels: per MCQ task (mean of 1 / number of options) and grounding (random intervals)."""
    out: dict[str, Any] = {"mcq": {}, "grounding": None}
    by_task: dict[str, list[float]] = {}
    for i in items:
        if i.kind == "mcq":
            by_task.setdefault(i.task, []).append(100.0 / len(i.options or ()) if i.options else math.nan)
    out["mcq"] = {t: float(np.mean(v)) for t, v in sorted(by_task.items())}
    all_mcq = [v for vs in by_task.values() for v in vs]
    if all_mcq:
        out["mcq_overall"] = float(np.mean(all_mcq))
    grounding = [i for i in items if i.kind == "grounding"]
    if grounding:
        out["grounding"] = grounding_chance(grounding, seed)
    return out


# ---------------------------------------------------------------------------------------------- tables
def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def synth_table_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows ``[measure, chance, normal, time, blind, order-dependent]`` of the TempoSynth results."""
    conditions = report["conditions"]
    metrics, chance = report["metrics"], report["chance"]

    def cell(cond: str, *path: str) -> str:
        node: Any = metrics.get(cond)
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return _pct(node)

    rows = []
    if chance.get("grounding"):
        for key in (*[f"R1@{m:g}" for m in THRESHOLDS], "mIoU"):
            rows.append(
                [
                    f"grounding {key}",
                    _pct(chance["grounding"][key]),
                    *[cell(c, "grounding", "strict", key) for c in conditions],
                    "yes",
                ]
            )
    order_dep = report.get("order_dependent_tasks", {})
    for task, level in chance.get("mcq", {}).items():
        rows.append(
            [
                f"mcq {task}",
                _pct(level),
                *[cell(c, "mcq", "strict", "per_task", task, "accuracy") for c in conditions],
                "yes" if order_dep.get(task) else "no",
            ]
        )
    if "mcq_overall" in chance:
        rows.append(
            [
                "mcq all",
                _pct(chance["mcq_overall"]),
                *[cell(c, "mcq", "strict", "accuracy") for c in conditions],
                "mixed",
            ]
        )
    return rows


def results_tables(report: dict[str, Any]) -> list[Any]:
    """Rich tables of a report: conditions side by side for a report with per-condition metrics (``synth``),
    strict vs official otherwise."""
    from rich.table import Table

    if report.get("kind") == "retrieval":
        return [retrieval_table(report)]
    likely = report.get("generation", {}).get("mcq_scoring") == "likelihood"
    mode = "; multiple choice by option likelihood" if likely else ""
    if "conditions" in report:  # per-condition metrics (SynthSpec.report_metrics)
        table = Table(title=f"TempoSynth ({report['num_items']} items per condition, strict, %{mode})")
        for col in ("measure", "chance", *report["conditions"], "order-dependent"):
            table.add_column(col, justify="left" if col == "measure" else "right")
        for row in synth_table_rows(report):
            table.add_row(*row)
        return [table]
    metrics = report["metrics"]
    table = Table(
        title=f"{report['benchmark']} ({report['num_items']} items, %{mode}); official = "
        f"{metrics.get('official_policy')}"
    )
    table.add_column("metric")
    table.add_column("strict", justify="right")
    table.add_column("official", justify="right")
    keys = [
        k
        for k in ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU", "accuracy", "micro_accuracy", "task_mean_accuracy")
        if k in metrics["strict"]
    ]
    for key in keys:
        table.add_row(key, _pct(metrics["strict"].get(key)), _pct(metrics["official"].get(key)))
    unparsed = "unparsed"
    table.add_row(
        unparsed, str(metrics["strict"].get(unparsed, "-")), str(metrics["official"].get(unparsed, "-"))
    )
    return [table]


def retrieval_table(report: dict[str, Any]) -> Any:
    """A rich table of a retrieval report: R@1/5/10 (percent) and median / mean rank per direction, the
    re-ranked metrics beside them when the report has them."""
    from rich.table import Table

    parts = {
        "similarity": report["metrics"],
        **({"re-ranked": report["reranked"]} if "reranked" in report else {}),
    }
    table = Table(title=f"{report['benchmark']} ({report['num_items']} texts, {report['num_videos']} videos, "
                        f"ties {report['tie']})")  # fmt: skip
    table.add_column("metric")
    for name in parts:
        for direction in ("t2v", "v2t"):
            table.add_column(f"{name} {direction}", justify="right")
    for key in ("R1", "R5", "R10", "MedianR", "MeanR"):
        table.add_row(key, *(f"{parts[n][d][key]:.1f}" for n in parts for d in ("t2v", "v2t")))
    return table
