"""The shape of a training recipe, checked before anything is built.

Top-level sections: ``name``, ``output_dir``, ``seed``, ``tokenizer``, ``model``, ``weights``, ``init_from``
(a vidtempo checkpoint directory whose weights start the first stage), ``data``, ``objective``, ``optim``,
``trainer``, ``checkpoint``, ``stages`` (+ free-form ``eval``/``prompts``/``notes``).
Unknown keys, wrong types and unknown aliases fail with the recipe file, the key and the valid choices:
every ``trainer`` value against the type hints of ``lightning.Trainer``, the ``data`` keys against
``DATA_TYPES``, the enumerations (``optim.name``, ``optim.scheduler``, ``optim.anneal_by``, ``data.overlong``)
against the constants their users read, and every alias (model parts, datasets, objective, auxiliary losses,
target builders, the video decoder ``data.collator.backend``) against its registry.

Example:
    >>> check_data({"batch_size": 2.5}, "data", "r.yaml")
    Traceback (most recent call last):
    ...
    vidtempo.config.errors.RecipeError: recipe r.yaml, key 'data.batch_size': expected int, got float 2.5
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from typing import Any

from vidtempo.config.errors import RecipeError
from vidtempo.config.validate import check_choice, check_value, validate_node, validate_tree
from vidtempo.data.overlong import OVERLONG_POLICIES
from vidtempo.models.lora import LoraSettings
from vidtempo.training.optim import ANNEAL_BY, OPTIMIZERS, SCHEDULERS, OptimSettings

TOP_LEVEL = {
    "name", "output_dir", "seed", "tokenizer", "model", "weights", "data", "objective", "optim",
    "trainer", "checkpoint", "stages", "eval", "prompts", "notes", "inference", "dpo", "curriculum",
    "prefgen", "prefgen_answers", "init_from", "_recipe_path_",
}  # fmt: skip
# typed data keys: (type, minimum, maximum) (None = unbounded)
DATA_TYPES: dict[str, tuple[type, float | None, float | None]] = {
    "batch_size": (int, 1, None), "num_workers": (int, 0, None), "max_skip_fraction": (float, 0.0, 1.0),
    "shuffle": (bool, None, None), "group_by_video": (int, 0, None), "overlong": (str, None, None),
    "group_by_length": (int, 0, None),
}  # fmt: skip
DATA_KEYS = {"train", "val", "collator", "packing", *DATA_TYPES}
PACKING_KEYS = {"max_tokens"}
OPTIM_CHOICES = {"name": OPTIMIZERS, "scheduler": SCHEDULERS, "anneal_by": ANNEAL_BY}
TRAINER_INJECTED = ("callbacks", "logger", "default_root_dir")  # build_trainer sets these
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
    hints = typing.get_type_hints(cls)
    for key, value in section.items():
        check_value(hints[key], value, key=f"{where}.{key}", recipe=recipe)


def check_signature(section: Any, target: Any, where: str, recipe: str, skip: tuple[str, ...] = ()) -> None:
    """Check a mapping of kwargs against a callable's signature (e.g. ``lightning.Trainer``): every key is a
    parameter, and every value fits the parameter's type hint (when the hints resolve)."""
    if section is None:
        return
    params = {n for n in inspect.signature(target).parameters if n not in skip and n != "self"}
    check_keys(section, params, where, recipe)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: the key check above still holds
        hints = {}
    for key, value in section.items():
        if key in hints:
            check_value(hints[key], value, key=f"{where}.{key}", recipe=recipe)


def check_data(data: Any, where: str, recipe: str) -> None:
    """The plain keys of a ``data`` section: known, typed, in range; ``overlong`` one of its policies."""
    check_keys(data, DATA_KEYS, where, recipe)
    for key, (kind, low, high) in DATA_TYPES.items():
        if data.get(key) is None:
            continue
        value = data[key]
        check_value(kind, value, key=f"{where}.{key}", recipe=recipe)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise RecipeError(f"expected {kind.__name__} {bounds}, got {value!r}", recipe=recipe,
                              key=f"{where}.{key}")  # fmt: skip
    if data.get("overlong") is not None:
        check_choice(data["overlong"], OVERLONG_POLICIES, key=f"{where}.overlong", recipe=recipe)
    check_packing(data.get("packing"), f"{where}.packing", recipe)


def check_packing(packing: Any, where: str, recipe: str) -> None:
    """``data.packing``: a mapping ``{max_tokens: N}``, N an int >= 1 (null = off)."""
    if packing is None:
        return
    check_keys(packing, PACKING_KEYS, where, recipe)
    tokens = packing.get("max_tokens")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise RecipeError(f"expected an int >= 1 (LLM tokens per packed row), got {tokens!r}", recipe=recipe,
                          key=f"{where}.max_tokens")  # fmt: skip


def check_optim(optim: Any, where: str, recipe: str) -> None:
    """``optim``: the settings' fields and types, and each enumeration against its constant."""
    check_fields(optim, OptimSettings, where, recipe)
    for key, choices in OPTIM_CHOICES.items():
        if optim and optim.get(key) is not None:
            check_choice(optim[key], choices, key=f"{where}.{key}", recipe=recipe)


def check_collator(collator: Any, where: str, recipe: str) -> None:
    """``data.collator``: arguments and types of ``VideoCollator``, the decoder alias, the target builders."""
    from vidtempo.data.collate import VideoCollator
    from vidtempo.registry import RegistryError, get_registry

    check_signature(collator, VideoCollator.__init__, where, recipe, skip=("tokenizer",))
    if not collator:
        return
    if isinstance(collator.get("backend"), str):
        try:
            get_registry("decoder").resolve(collator["backend"])
        except RegistryError as err:
            raise RecipeError(str(err), recipe=recipe, key=f"{where}.backend") from err
    if collator.get("targets") is not None:
        validate_tree(collator["targets"], key=f"{where}.targets", recipe=recipe)


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
    _check_packing_budget(cfg, recipe)
    _check_objectives(cfg, recipe)


def _check_packing_budget(cfg: dict[str, Any], recipe: str) -> None:
    """``data.packing.max_tokens`` must hold the longest sample ``data.overlong`` lets through: at least
    ``model.max_length`` (checked per merged stage, before anything is built)."""
    from vidtempo.training.build import expand_stages

    longest = (cfg.get("model") or {}).get("max_length")
    for i, stage in enumerate(expand_stages(cfg)):
        tokens = (stage["data"].get("packing") or {}).get("max_tokens")
        if isinstance(longest, int) and isinstance(tokens, int) and tokens < longest:
            key = f"stages.{i}.data.packing.max_tokens" if cfg.get("stages") else "data.packing.max_tokens"
            raise RecipeError(f"{tokens} is below model.max_length={longest}: a sample data.overlong lets through "
                              f"(up to {longest} tokens) would not fit a packed row; raise it to at least {longest} "
                              "or lower model.max_length", recipe=recipe, key=key)  # fmt: skip


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

    check_optim(section.get("optim"), f"{prefix}optim", recipe)
    check_signature(section.get("trainer"), L.Trainer.__init__, f"{prefix}trainer", recipe, skip=TRAINER_INJECTED)
    check_keys(section.get("trainable"), TRAINABLE_KEYS, f"{prefix}trainable", recipe)
    check_keys(section.get("checkpoint"), CHECKPOINT_KEYS, f"{prefix}checkpoint", recipe)
    if section.get("objective") is not None:
        validate_node(section["objective"], key=f"{prefix}objective", recipe=recipe, provided=("model",))
    data = section.get("data")
    if data is not None:
        check_data(data, f"{prefix}data", recipe)
        check_collator(data.get("collator"), f"{prefix}data.collator", recipe)
        for split in ("train", "val"):
            if data.get(split) is not None:
                validate_node(data[split], key=f"{prefix}data.{split}", recipe=recipe)
