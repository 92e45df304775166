"""Named LLM sizes as builder functions. Real sizes use the public ``config.json`` numbers so they can be
built on the meta device offline (``vidtempo inspect``); weights load later from ``name_or_path``.

Example:
    >>> llm = tiny_llm(arch="llama")
    >>> llm.config.model_type
    'llama'
"""

from __future__ import annotations

from typing import Any

from vidtempo.models.llms.hf import HFCausalLM

# Tiny shapes for tests and CPU recipes (vocab must cover the tiny tokenizer).
_TINY_COMMON = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
_TINY_ARCH = {"qwen2": {}, "llama": {}, "mistral": {"sliding_window": None}}

# From the public config.json of each checkpoint (huggingface.co/<id>/blob/main/config.json).
QWEN2_7B_INSTRUCT = {
    "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}  # fmt: skip
LLAMA3_2_3B_INSTRUCT = {
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "head_dim": 128,
}  # fmt: skip
MISTRAL_7B_INSTRUCT = {
    "model_type": "mistral", "vocab_size": 32768, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "sliding_window": None,
}  # fmt: skip


def tiny_llm(arch: str = "qwen2", vocab_size: int = 512, **overrides: Any) -> HFCausalLM:
    """A 2-layer, 64-wide random causal LM of a real architecture (``qwen2``, ``llama`` or ``mistral``)."""
    if arch not in _TINY_ARCH:
        raise ValueError(f"tiny_llm arch must be one of {sorted(_TINY_ARCH)}, got '{arch}'")
    config = {"model_type": arch, **_TINY_COMMON, **_TINY_ARCH[arch], "vocab_size": vocab_size, **overrides}
    return HFCausalLM(config=config)


def _named(config: dict[str, Any], default_id: str, name_or_path: str | None,
           overrides: dict[str, Any] | None, **kw: Any) -> HFCausalLM:  # fmt: skip
    return HFCausalLM(name_or_path or default_id, config={**config, **(overrides or {})}, **kw)


# ``config`` (each preset): keys merged over the preset's architecture, e.g. ``{num_hidden_layers: 1}`` for a
# real-width, reduced-depth build (tests/models/test_real_recipes.py).
def qwen2_7b_instruct(name_or_path: str | None = None, config: dict[str, Any] | None = None,
                      **kw: Any) -> HFCausalLM:  # fmt: skip
    """Qwen2-7B-Instruct (7.6 B parameters); weights from ``name_or_path`` on ``load_pretrained``."""
    return _named(QWEN2_7B_INSTRUCT, "Qwen/Qwen2-7B-Instruct", name_or_path, config, **kw)


def llama3_2_3b_instruct(name_or_path: str | None = None, config: dict[str, Any] | None = None,
                         **kw: Any) -> HFCausalLM:  # fmt: skip
    """Llama-3.2-3B-Instruct (3.2 B parameters)."""
    return _named(LLAMA3_2_3B_INSTRUCT, "meta-llama/Llama-3.2-3B-Instruct", name_or_path, config, **kw)


def mistral_7b_instruct(name_or_path: str | None = None, config: dict[str, Any] | None = None,
                        **kw: Any) -> HFCausalLM:  # fmt: skip
    """Mistral-7B-Instruct-v0.3 (7.2 B parameters)."""
    return _named(MISTRAL_7B_INSTRUCT, "mistralai/Mistral-7B-Instruct-v0.3", name_or_path, config, **kw)
