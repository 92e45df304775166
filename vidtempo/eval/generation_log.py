"""The resumable record of an evaluation run: ``generations.jsonl`` (one row per condition and item, appended
and flushed batch by batch) and ``run.json`` (the settings that decide the generations).

A re-run regenerates only the items without a row (and retries skipped ones); a re-run with different settings
refuses to mix its rows with the old ones (``fresh=True`` starts over).

Example:
    >>> import tempfile
    >>> from vidtempo.eval.items import EvalItem
    >>> item = EvalItem("q", "mcq", "v.mp4", "<video>\\nWhich?", "B", options=("A. x", "B. y"))
    >>> log = GenerationLog(Path(tempfile.mkdtemp()) / GENERATIONS)
    >>> log.append([item_row(item, "normal", "synth", "B")])
    >>> log.read()[("normal", "q")]["score"]["correct"]
    True
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vidtempo.eval.benchmarks import BenchmarkSource, EvalError, EvalItem
from vidtempo.eval.results import score_item
from vidtempo.eval.settings import EvalSettings
from vidtempo.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

GENERATIONS = "generations.jsonl"
RUN_META = "run.json"


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


def item_row(
    item: EvalItem,
    condition: str,
    benchmark: str,
    raw: str | None,
    skipped: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of ``generations.jsonl``: the item, its raw answer (None: skipped), the parsed answer and score."""
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


def skipped_rows(skipped: Sequence[Any], by_id: dict[str, EvalItem], condition: str, benchmark: str,
                 extras: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of items whose clip could not be decoded (one per item, even when several rows shared it)."""
    once = {s.id: s for s in skipped}
    return [
        item_row(by_id[i], condition, benchmark, None, {"path": s.path, "reason": s.reason}, extras.get(i))
        for i, s in once.items()
    ]


def permutation_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``{"time_permutation": ...}`` when the time control permuted this row's inputs (else empty)."""
    return {"time_permutation": meta["time_permutation"]} if "time_permutation" in meta else {}


def checkpoint_fingerprint(checkpoint: Path) -> dict[str, Any]:
    """Path, weights size and mtime of a checkpoint: a re-run against changed weights does not resume."""
    if not (checkpoint / "vidtempo.json").is_file():
        raise EvalError(f"{checkpoint} is not a vidtempo checkpoint (vidtempo.json is missing)")
    weights = checkpoint / "model.safetensors"
    stat = weights.stat() if weights.is_file() else None
    return {
        "path": str(checkpoint.resolve()),
        "weights_bytes": stat.st_size if stat else None,
        "weights_mtime": stat.st_mtime if stat else None,
    }


def run_meta(
    benchmark: str,
    checkpoint: Path,
    settings: EvalSettings,
    source: BenchmarkSource,
    templates: Sequence[str],
) -> dict[str, Any]:
    """The ``run.json`` content: everything that decides the generations."""
    return {
        "benchmark": benchmark,
        "checkpoint": checkpoint_fingerprint(checkpoint),
        "annotations": source.annotations, "video_root": source.video_root, "source_options": source.options,
        "collator": settings.collator, "prompts": {t: settings.prompts[t] for t in templates},
        "option_format": settings.option_format, "max_new_tokens": settings.max_new_tokens,
        "control_seed": settings.control_seed,
        "lvcot": settings.lvcot.to_dict() if settings.lvcot is not None else None,
        **({"mcq_scoring": settings.mcq_scoring, "mcq_answer": settings.mcq_answer}
           if settings.mcq_scoring != "generate" else {}),
    }  # fmt: skip


def check_resume(out_dir: Path, meta: dict[str, Any], fresh: bool) -> None:
    """Write ``run.json``; refuse (``EvalError``) when earlier rows were generated with other settings."""
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
    atomic_write_text(path, json.dumps(meta, indent=1, default=str) + "\n")
