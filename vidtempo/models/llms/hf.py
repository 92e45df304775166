"""Wrapper around any transformers ``AutoModelForCausalLM``: build from a config (never downloads),
load weights in one explicit step, expose embeddings and hidden size.

Example:
    >>> llm = HFCausalLM(config={"model_type": "qwen2", "vocab_size": 64, "hidden_size": 16,
    ...     "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1})
    >>> llm.hidden_size
    16
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def _config_from_dict(config: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"an LLM config needs 'model_type' (e.g. qwen2, llama, mistral); got keys {sorted(config)}")
    return AutoConfig.for_model(model_type, **config)


_ARCH_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads")  # fmt: skip


def check_config(source: str, ours: Any) -> None:
    """Raise ``ValueError`` naming the first architecture key where the config at ``source`` differs from ours
    (nothing to check when ``source`` has no config.json)."""
    from transformers import AutoConfig

    try:
        theirs = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        return
    theirs = getattr(theirs, "text_config", None) if theirs.model_type != ours.model_type else theirs
    for key in _ARCH_KEYS:
        if theirs is not None and hasattr(theirs, key) and getattr(theirs, key) != getattr(ours, key, None):
            raise ValueError(f"weights in '{source}' do not match the configured architecture: {key} is "
                             f"{getattr(theirs, key)!r} there, {getattr(ours, key, None)!r} here")  # fmt: skip


class HFCausalLM(nn.Module):
    """Any Hugging Face causal LM, built offline.

    Args:
        name_or_path: where weights (and, without ``config``, the config) come from: a local directory
            or a hub id already in the local cache. Only read by the constructor when ``config`` is None.
        config: kwargs of the transformers config, including ``model_type``; builds a random-init model.
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2``.
        gradient_checkpointing: enable activation checkpointing in the transformer blocks.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        if config is not None:
            hf_config = _config_from_dict(config)
        elif name_or_path is not None:
            try:
                hf_config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
            except OSError as err:
                raise FileNotFoundError(
                    f"LLM '{name_or_path}' is not available offline (no local directory or cached copy); "
                    "give a local directory or use a named preset (vidtempo list llm)"
                ) from err
        else:
            raise ValueError("HFCausalLM needs a config dict or a name_or_path")
        hf_config._attn_implementation = attn_implementation
        self.name_or_path = name_or_path
        self.model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    # parts built under ``vidtempo.models.weights.empty_init`` load every parameter in ``load_pretrained``
    lean_load = True

    def load_pretrained(self, path: str | Path | None = None, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> None:  # fmt: skip
        """Load weights from ``path`` (default ``name_or_path``): a local directory or a cached hub id.

        Tensor by tensor from its safetensors files straight into ``dtype`` (default: the parameters' dtype) on
        ``device`` (``vidtempo.models.weights``): a model built under ``empty_init`` is never random-initialised
        and never held twice.
        """
        from vidtempo.models.weights import checkpoint_files, load_weights

        source = str(path or self.name_or_path or "")
        if not source:
            raise ValueError("load_pretrained needs a path (this LLM was built from a config only)")
        check_config(source, self.model.config)
        load_weights(self.model, checkpoint_files(source), dtype=dtype, device=device,
                     optional=lambda k: "rotary_emb" in k)  # fmt: skip

    def forward(self, **kwargs: Any) -> Any:
        return self.model(**kwargs)
