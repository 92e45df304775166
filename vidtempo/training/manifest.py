"""The run manifest: the resolved training settings of every stage of a run, kept in ``<output_dir>/manifest.json``.

Re-running a command continues the run in its output directory: finished stages are skipped, the running one
resumes. That is only right when the recipe is the one the run was trained with. :func:`check_manifest`
compares the settings of the stages that already started (and the model, tokenizer, seed and initial weights,
once any stage started) with the manifest and refuses a change, naming each changed key with its old and new
value, unless the user allows it explicitly (``--allow-changed-recipe``); stages that have not started may
change freely. Allowed changes are recorded in the manifest's ``changes`` history.

Example:
    >>> flat_diff({"optim": {"lr": 0.001}, "trainer": {"max_steps": 40}},
    ...           {"optim": {"lr": 0.5}, "trainer": {"max_steps": 40}})
    ['optim.lr: 0.001 -> 0.5']
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vidtempo.config.errors import RecipeError
from vidtempo.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
GLOBAL_KEYS = ("model", "tokenizer", "seed", "weights", "init_from")


class RecipeChangedError(RecipeError):
    """A run would continue with settings other than those it was trained with."""


def run_settings(plain: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """What decides the trained weights: the global model settings and each merged stage."""
    return {"global": {k: plain.get(k) for k in GLOBAL_KEYS},
            "stages": {stage["name"]: stage for stage in stages}}  # fmt: skip


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def flat_diff(old: Any, new: Any) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (``<absent>`` for a missing key)."""
    a, b = _flatten(json.loads(json.dumps(old, default=str))), _flatten(json.loads(json.dumps(new, default=str)))
    missing = "<absent>"
    return [f"{k}: {a.get(k, missing)} -> {b.get(k, missing)}" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]  # fmt: skip


def check_manifest(out: Path, settings: dict[str, Any], started: dict[str, bool], allow: bool,
                   recipe: str) -> list[str]:  # fmt: skip
    """Compare ``settings`` with ``out``'s manifest for the ``started`` stages; raise ``RecipeChangedError``
    on a change unless ``allow``. Returns the changes found (allowed or none)."""
    path = out / MANIFEST_NAME
    if not path.is_file() or not any(started.values()):
        return []
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecipeError(f"{path} is unreadable ({err}); move it away to start the run afresh", recipe=recipe,
                          key="output_dir") from err  # fmt: skip
    changes = flat_diff(saved.get("global"), settings["global"])
    for name, stage in settings["stages"].items():
        if started.get(name) and name in (saved.get("stages") or {}):
            changes += [f"stage {name}: {d}" for d in flat_diff(saved["stages"][name], stage)]
    if changes and not allow:
        shown = "; ".join(changes[:8]) + (f"; ... ({len(changes)} changes)" if len(changes) > 8 else "")
        raise RecipeChangedError(
            f"{out} was trained with other settings: {shown}. Re-run with the recipe it was trained with to "
            "resume, choose another output_dir, or pass --allow-changed-recipe to continue with the new settings",
            recipe=recipe,
        )
    if changes:
        log.warning("continuing %s with changed settings (--allow-changed-recipe): %s", out, "; ".join(changes))
    return changes


def write_manifest(out: Path, settings: dict[str, Any], changes: list[str]) -> Path:
    """Write (atomically) the manifest with ``settings``, appending ``changes`` to its history."""
    path = out / MANIFEST_NAME
    history: list[Any] = []
    if path.is_file():
        try:
            history = list(json.loads(path.read_text()).get("changes") or [])
        except (OSError, json.JSONDecodeError):
            history = []
    if changes:
        history.append(changes)
    text = json.dumps({**settings, "changes": history}, indent=1, default=str) + "\n"
    return atomic_write_text(path, text)
