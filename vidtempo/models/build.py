"""Build a ``VideoLLM`` from its recipe node: parts first, explicit weight loading, then composition.

Weights never load inside constructors. ``weights`` maps a part name to a local path (or ``null`` = the
part's own ``name_or_path``); each part's ``load_pretrained`` runs before LoRA wrapping.

Example:
    >>> node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
    ...         "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}
    >>> type(build_video_llm(node)).__name__
    'VideoLLM'
"""

from __future__ import annotations

import typing
from contextlib import nullcontext
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vidtempo.config.errors import RecipeError
from vidtempo.config.instantiate import instantiate, resolve_target

PART_KEYS = ("vision_encoder", "audio_encoder", "compressor", "projector", "llm")


DEFERRABLE = ("llm",)  # parts whose values nothing reads before FSDP2 shards them (the towers run at build)


def build_video_llm(
    node: dict[str, Any] | DictConfig, weights: dict[str, str | None] | None = None, recipe: str | None = None,
    dtype: torch.dtype | None = None, defer: bool = False,
) -> Any:
    """Instantiate the parts of ``node``, load ``weights`` into them, then build the model around them.

    A part named in ``weights`` whose class loads every parameter itself (``lean_load = True``: the LLMs, the
    native Qwen2.5-VL, the transformers / timm vision towers, the Whisper encoder) is built with its parameters
    on the meta device and filled tensor by tensor in ``dtype`` (``vidtempo.models.weights``): no random init, no
    second copy. ``dtype`` (None = fp32) is the dtype of the loaded weights (``weights_dtype(trainer.precision)``:
    bf16 under ``bf16-true``).

    ``defer`` (FSDP2 training): the LLM's load is only checked and recorded (``weights.defer_loads``); the model
    comes back with that LLM still on the meta device and the records in ``model.pending_weights``, which
    ``strategies.shard_for_strategy`` loads after sharding, each rank reading only its own rows. Not deferred
    when the model adds token rows (``new_token_ids``: their start is the mean of the loaded rows)."""
    from vidtempo.models.weights import defer_loads, empty_init, meta_parameters

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
    loaded = set(weights or {})
    parts: dict[str, Any] = {}
    pending: list[Any] = []
    for key, value in node.items():
        if key not in PART_KEYS or value is None:
            continue
        lean = key in loaded and _lean_loadable(value, f"model.{key}", recipe, (weights or {}).get(key))
        with empty_init() if lean else nullcontext():
            parts[key] = instantiate(value, key=f"model.{key}", recipe=recipe)
    for part, source in (weights or {}).items():
        if part not in parts:
            raise RecipeError(f"no model part '{part}' to load weights into; parts: {sorted(parts)}",
                              recipe=recipe, key=f"weights.{part}")  # fmt: skip
        loader = getattr(parts[part], "load_pretrained", None)
        if loader is None:
            raise RecipeError(f"{type(parts[part]).__name__} has no load_pretrained()", recipe=recipe,
                              key=f"weights.{part}")  # fmt: skip
        deferring = defer and part in DEFERRABLE and not node.get("new_token_ids") and meta_parameters(parts[part])
        with defer_loads() if deferring else nullcontext() as recorded:
            if getattr(parts[part], "lean_load", False):
                loader(source, dtype=dtype)
            else:
                loader(source)
        if recorded:
            pending.extend(recorded)
        elif unloaded := meta_parameters(parts[part]):
            raise RecipeError(f"{len(unloaded)} parameters were not in the weights, e.g. {unloaded[:3]}",
                              recipe=recipe, key=f"weights.{part}")  # fmt: skip
    rest = {k: v for k, v in node.items() if k not in parts}
    model = instantiate(rest, key="model", recipe=recipe, **parts)
    if pending:
        model.pending_weights = pending
    return model


def load_deferred(model: Any) -> None:
    """Load, unsharded, what ``build_video_llm(defer=True)`` left on the meta device (for uses of the model
    before, or instead of, FSDP2 sharding: an ``init_from``, a finished stage's weights, a stage without FSDP)."""
    from vidtempo.models.weights import load_pending

    load_pending(getattr(model, "pending_weights", None) or [])


def _lean_loadable(node: Any, key: str, recipe: str | None, source: Any = None) -> bool:
    """Whether the class a part node builds (directly, or as a builder function's return annotation) loads all
    of its parameters in ``load_pretrained`` (``lean_load = True``; a class with a ``lean_for(node, source,
    is_lean)`` decides per recipe node, e.g. ``ConcatEncoder`` when ``weights:`` names every tower)."""
    if not isinstance(node, dict) or "_target_" not in node:
        return False
    target = resolve_target(node, key, recipe)
    if not isinstance(target, type):
        try:
            target = typing.get_type_hints(target).get("return")
        except Exception:  # an unresolvable annotation: build the plain way
            return False
    if not isinstance(target, type) or not getattr(target, "lean_load", False):
        return False
    lean_for = getattr(target, "lean_for", None)
    if lean_for is None:
        return True
    return bool(lean_for(node, source, lambda sub: _lean_loadable(sub, key, recipe)))
