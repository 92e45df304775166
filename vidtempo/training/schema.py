"""The shape of a training recipe, checked before anything is built.

Top-level sections: ``name``, ``output_dir``, ``seed``, ``tokenizer``, ``model``, ``weights``, ``init_from``
(a vidtempo checkpoint directory whose weights start the first stage), ``data``, ``objective``, ``optim``,
``trainer``, ``checkpoint``, ``stages`` (+ free-form ``eval``/``prompts``/``notes``).
Unknown keys, wrong types and unknown aliases fail with the recipe file, the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any

from vidtempo.config.errors import RecipeError
from vidtempo.config.validate import accepts_value, describe_type, validate_node, validate_tree
from vidtempo.models.lora import LoraSettings
from vidtempo.training.optim import OptimSettings

TOP_LEVEL = {
    "name", "output_dir", "seed", "tokenizer", "model", "weights", "data", "objective", "optim",
    "trainer", "checkpoint", "stages", "eval", "prompts", "notes", "inference", "dpo", "curriculum",
    "prefgen", "prefgen_answers", "init_from", "_recipe_path_",
}  # fmt: skip
DATA_KEYS = {"train", "val", "collator", "batch_size", "num_workers", "max_skip_fraction", "shuffle",
             "group_by_video"}
STAGE_KEYS = {"name", "trainable", "optim", "data", "trainer", "objective", "checkpoint", "merge_lora_after", "lora"}
CHECKPOINT_KEYS = {"every_n_steps", "save_top_k"}
TRAINABLE_KEYS = {"vision_encoder", "audio_encoder", "compressor", "projector", "llm"}


def _unknown(key: str, valid: set[str], where: str, recipe: str) -> RecipeError:
    close = difflib.get_close_matches(key, sorted(valid), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return RecipeError(f"unknown key.{hint} Valid keys: {', '.join(sorted(valid))}", recipe=recipe,
                       key=f"{where}.{key}" if where else key)  # fmt: skip


def check_keys(section: Any, valid: set[str], where: str, recipe: str) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise RecipeError(f"expected a mapping, got {type(section).__name__}", recipe=recipe, key=where)
    for key in section:
        if key not in valid:
            raise _unknown(key, valid, where, recipe)


def check_fields(section: Any, cls: type, where: str, recipe: str) -> None:
    """Check a plain mapping against a dataclass's fields and their types."""
    if section is None:
        return
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(section, set(fields), where, recipe)
    hints = __import__("typing").get_type_hints(cls)
    for key, value in section.items():
        if not accepts_value(hints[key], value):
            raise RecipeError(f"expected {describe_type(hints[key])}, got {type(value).__name__} {value!r}",
                              recipe=recipe, key=f"{where}.{key}")  # fmt: skip


def check_signature(section: Any, target: Any, where: str, recipe: str, skip: tuple[str, ...] = ()) -> None:
    """Check a mapping of kwargs against a callable's signature (e.g. ``lightning.Trainer``)."""
    if section is None:
        return
    params = {n for n in inspect.signature(target).parameters if n not in skip and n != "self"}
    check_keys(section, params, where, recipe)


def validate_recipe(cfg: dict[str, Any], recipe: str) -> None:
    """Validate a resolved training recipe (plain dict) without building any model."""
    check_keys(cfg, TOP_LEVEL, "", recipe)
    for required in ("model", "data"):
        if required not in cfg:
            raise RecipeError("missing required section", recipe=recipe, key=required)
    if "tokenizer" in cfg:
        validate_tree(cfg["tokenizer"], key="tokenizer", recipe=recipe)
    validate_node(_model_node(cfg["model"], recipe), key="model", recipe=recipe,
                  provided=("vision_encoder", "compressor", "llm"))  # fmt: skip
    _validate_stage_like(cfg, "", recipe)
    check_keys(cfg.get("checkpoint"), CHECKPOINT_KEYS, "checkpoint", recipe)
    stages = cfg.get("stages") or []
    if not isinstance(stages, list):
        raise RecipeError("expected a list of stages", recipe=recipe, key="stages")
    for i, stage in enumerate(stages):
        check_keys(stage, STAGE_KEYS, f"stages.{i}", recipe)
        check_fields(stage.get("lora"), LoraSettings, f"stages.{i}.lora", recipe)
        _validate_stage_like(stage, f"stages.{i}.", recipe)
    _check_time_budgets(cfg, recipe)
    _check_objectives(cfg, recipe)


def _check_objectives(cfg: dict[str, Any], recipe: str) -> None:
    """Each merged stage's objective validates its own view of the stage (``Objective.check_recipe``): e.g.
    that every auxiliary loss has the batch target it reads."""
    from vidtempo.config.instantiate import resolve_target
    from vidtempo.training.build import expand_stages

    for i, stage in enumerate(expand_stages(cfg)):
        prefix = f"stages.{i}." if cfg.get("stages") else ""
        objective = resolve_target(stage["objective"], f"{prefix}objective", recipe)
        check = getattr(objective, "check_recipe", None)
        if check is not None:
            check(stage, recipe, prefix)


def _check_time_budgets(cfg: dict[str, Any], recipe: str) -> None:
    """``optim.anneal_by: time`` needs the stage's ``trainer.max_time`` (checked per merged stage, before any
    data is loaded)."""
    from vidtempo.training.build import expand_stages

    for i, stage in enumerate(expand_stages(cfg)):
        if stage["optim"].get("anneal_by") == "time" and not stage["trainer"].get("max_time"):
            key = f"stages.{i}.optim.anneal_by" if cfg.get("stages") else "optim.anneal_by"
            raise RecipeError("'time' needs trainer.max_time (the budget the decay runs over); set max_time "
                              "or use anneal_by: steps", recipe=recipe, key=key)  # fmt: skip


def _model_node(node: Any, recipe: str) -> dict[str, Any]:
    if not isinstance(node, dict) or "_target_" not in node:
        raise RecipeError("expected a mapping with _target_", recipe=recipe, key="model")
    check_keys(node.get("trainable"), TRAINABLE_KEYS, "model.trainable", recipe)
    check_fields(node.get("lora"), LoraSettings, "model.lora", recipe)
    return node


def _validate_stage_like(section: dict[str, Any], prefix: str, recipe: str) -> None:
    import lightning as L

    from vidtempo.data.collate import VideoCollator

    check_fields(section.get("optim"), OptimSettings, f"{prefix}optim", recipe)
    check_signature(section.get("trainer"), L.Trainer.__init__, f"{prefix}trainer", recipe,
                    skip=("callbacks", "logger", "default_root_dir"))  # fmt: skip
    check_keys(section.get("trainable"), TRAINABLE_KEYS, f"{prefix}trainable", recipe)
    check_keys(section.get("checkpoint"), CHECKPOINT_KEYS, f"{prefix}checkpoint", recipe)
    if section.get("objective") is not None:
        validate_node(section["objective"], key=f"{prefix}objective", recipe=recipe, provided=("model",))
    data = section.get("data")
    if data is not None:
        check_keys(data, DATA_KEYS, f"{prefix}data", recipe)
        check_signature(data.get("collator"), VideoCollator.__init__, f"{prefix}data.collator", recipe,
                        skip=("tokenizer",))  # fmt: skip
        for split in ("train", "val"):
            if data.get(split) is not None:
                validate_node(data[split], key=f"{prefix}data.{split}", recipe=recipe)
