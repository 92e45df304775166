"""``report.json`` of an evaluation run, recomputed from the logged raw answers on every run: the benchmark
spec's metrics (:meth:`~vidtempo.eval.benchmarks.BenchmarkSpec.report_metrics`), the scoring policies,
prompts, frame sampling, decoder, checkpoint, recipe hash, vidtempo version, counts and skipped items.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / REPORT
    >>> write_json(path, {"benchmark": "synth"})
    >>> json.loads(path.read_text())["benchmark"]
    'synth'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidtempo import __version__
from vidtempo.eval.benchmarks import BenchmarkSource, EvalError, EvalItem, get_benchmark
from vidtempo.eval.settings import EvalSettings

REPORT = "report.json"
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
    entries, policy = spec.report_metrics(items, conditions, raws, settings.control_seed)
    report: dict[str, Any] = {
        "benchmark": benchmark,
        "description": spec.description,
        "num_items": len(items),
        **entries,
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (temporary file, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
