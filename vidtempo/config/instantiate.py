"""Build objects from recipe nodes: ``{_target_: alias-or-dotted.path, **kwargs}``.

* ``_target_`` is resolved as an alias of the node's kind (from the key it sits under, e.g. ``compressor``
  or ``vision_encoder``; ``_kind_`` overrides) or as a dotted import path.
* Children are built first (depth-first), lists element-wise.
* ``_partial_: true`` returns ``functools.partial(target, **kwargs)`` for objects that need run-time arguments.

Example:
    >>> obj = instantiate({"_target_": "collections.Counter", "a": 2})
    >>> obj["a"]
    2
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vidtempo.config.errors import RecipeError
from vidtempo.registry import RegistryError, get_registry, kinds

SPECIAL_KEYS = ("_target_", "_partial_", "_kind_")

# Keys whose value is a component of that kind (so `compressor: {_target_: pool}` finds the alias).
KEY_TO_KIND = {
    "vision_encoder": "vision_encoder",
    "towers": "vision_encoder",
    "audio_encoder": "audio_encoder",
    "compressor": "compressor",
    "projector": "projector",
    "llm": "llm",
    "tokenizer": "tokenizer",
    "objective": "objective",
    "module": "objective",
    "dataset": "dataset",
    "datasets": "dataset",  # the children of a dataset mixture (``_target_: mixture``)
    "train": "dataset",
    "val": "dataset",
    "test": "dataset",
    "decoder": "decoder",
}
# Keys whose value is a mapping of named components of one kind (``aux: {saliency: {_target_: saliency}}``).
PARENT_TO_KIND = {"aux": "aux_loss", "targets": "target_builder"}


def kind_for(key: str | None, node: Mapping[str, Any]) -> str | None:
    """The registry kind of a node sitting under ``key`` (``_kind_`` wins)."""
    explicit = node.get("_kind_")
    if explicit:
        if explicit not in kinds():
            raise RecipeError(f"unknown _kind_ '{explicit}'; valid kinds: {', '.join(kinds())}", key=key)
        return str(explicit)
    if not key:
        return None
    parts = key.split(".")
    while parts and parts[-1].isdigit():  # list elements take the kind of their list's key
        parts.pop()
    if len(parts) >= 2 and parts[-2] in PARENT_TO_KIND:  # a named entry of a component mapping
        return PARENT_TO_KIND[parts[-2]]
    return KEY_TO_KIND.get(parts[-1]) if parts else None


def resolve_target(node: Mapping[str, Any], key: str | None, recipe: str | None = None) -> Any:
    """Import the callable a node names, with an error naming the key and the valid aliases."""
    target = node["_target_"]
    if not isinstance(target, str):
        raise RecipeError(f"_target_ must be a string, got {type(target).__name__}", recipe=recipe, key=key)
    kind = kind_for(key, node)
    try:
        if kind is not None:
            return get_registry(kind).resolve(target)
        from vidtempo.registry import import_target

        return import_target(target)
    except RegistryError as err:
        raise RecipeError(str(err), recipe=recipe, key=f"{key}._target_" if key else "_target_") from err


def _to_plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def instantiate(node: Any, *, key: str | None = None, recipe: str | None = None, **kwargs: Any) -> Any:
    """Recursively build ``node``; ``kwargs`` are extra/overriding constructor arguments for the top node."""
    node = _to_plain(node)
    return _build(node, key, recipe, kwargs)


def _build(node: Any, key: str | None, recipe: str | None, extra: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_build(v, f"{key}.{i}" if key else str(i), recipe, {}) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    if "_target_" not in node:
        return {k: _build(v, f"{key}.{k}" if key else k, recipe, {}) for k, v in node.items()}
    target = resolve_target(node, key, recipe)
    args = {
        k: _build(v, f"{key}.{k}" if key else k, recipe, {}) for k, v in node.items() if k not in SPECIAL_KEYS
    }
    args.update(extra)
    if node.get("_partial_", False):
        return functools.partial(target, **args)
    try:
        return target(**args)
    except TypeError as err:
        raise RecipeError(f"cannot build {node['_target_']}: {err}", recipe=recipe, key=key) from err
