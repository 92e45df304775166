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

from typing import Any

from omegaconf import DictConfig, OmegaConf

from vidtempo.config.errors import RecipeError
from vidtempo.config.instantiate import instantiate

PART_KEYS = ("vision_encoder", "audio_encoder", "compressor", "projector", "llm")


def build_video_llm(
    node: dict[str, Any] | DictConfig, weights: dict[str, str | None] | None = None, recipe: str | None = None
) -> Any:
    """Instantiate the parts of ``node``, load ``weights`` into them, then build the model around them."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
    parts = {
        key: instantiate(value, key=f"model.{key}", recipe=recipe)
        for key, value in node.items()
        if key in PART_KEYS and value is not None
    }
    for part, source in (weights or {}).items():
        if part not in parts:
            raise RecipeError(f"no model part '{part}' to load weights into; parts: {sorted(parts)}",
                              recipe=recipe, key=f"weights.{part}")  # fmt: skip
        loader = getattr(parts[part], "load_pretrained", None)
        if loader is None:
            raise RecipeError(f"{type(parts[part]).__name__} has no load_pretrained()", recipe=recipe,
                              key=f"weights.{part}")  # fmt: skip
        loader(source)
    rest = {k: v for k, v in node.items() if k not in parts}
    return instantiate(rest, key="model", recipe=recipe, **parts)
