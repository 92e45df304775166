"""LoRA on the LLM through peft, with configurable target modules.

Example:
    >>> from vidtempo.models.llms.presets import tiny_llm
    >>> llm = tiny_llm()
    >>> apply_lora(llm, LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    >>> any("lora_A" in n for n, _ in llm.named_parameters())
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class LoraSettings:
    """peft LoRA hyper-parameters (TDC stage 3: r=128, alpha=256; TEMPLE DPO: r=32, alpha=64)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


def apply_lora(llm: nn.Module, settings: LoraSettings, trainable_tokens: list[int] | None = None) -> None:
    """Wrap ``llm.model`` (a transformers causal LM) in a peft LoRA model in place.

    ``trainable_tokens``: token ids whose rows of the input embeddings and of the LM head train alongside the
    adapter (peft ``trainable_token_indices``; the rows of tokens added to the tokenizer, e.g. time tokens)."""
    from peft import LoraConfig, get_peft_model

    from vidtempo.models.new_tokens import embedding_module_names
    from vidtempo.models.weights import adapters_off_meta

    extra = {}
    if trainable_tokens:
        ids = sorted(int(i) for i in trainable_tokens)
        extra["trainable_token_indices"] = {name: ids for name in embedding_module_names(llm.model).values()}
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
        **extra,
    )
    with adapters_off_meta():  # a deferred (meta) base LLM: the adapters keep their initial values on the CPU
        llm.model = get_peft_model(llm.model, config)
