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


def apply_lora(llm: nn.Module, settings: LoraSettings) -> None:
    """Wrap ``llm.model`` (a transformers causal LM) in a peft LoRA model in place."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    llm.model = get_peft_model(llm.model, config)
