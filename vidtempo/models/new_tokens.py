"""Token rows added to a causal LM for tokens added to its tokenizer (``tokenizer.time_tokens``).

:func:`grow_vocab` makes the input embeddings and the LM head hold the new ids (resizing them when they are
too small) and starts every new row at the mean of the rows before the first new id. The start is
deterministic, so a LoRA checkpoint that stores only the trained rows' deltas (peft
``trainable_token_indices``) reloads onto the base weights exactly.

Example:
    >>> from vidtempo.models.llms.presets import tiny_llm
    >>> llm = tiny_llm(vocab_size=64)
    >>> grow_vocab(llm.model, list(range(64, 74)))
    >>> llm.get_input_embeddings().weight.shape[0], llm.model.get_output_embeddings().weight.shape[0]
    (74, 74)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def grow_vocab(causal_lm: nn.Module, ids: Sequence[int]) -> None:
    """Give ``causal_lm`` (a transformers causal LM) rows for token ``ids``, each starting at the mean old row.

    Raises:
        ValueError: the model cannot resize its token embeddings.
    """
    if not ids:
        return
    ids = sorted(int(i) for i in ids)
    embed = causal_lm.get_input_embeddings()
    rows = int(embed.weight.shape[0])
    if ids[-1] >= rows:
        try:
            causal_lm.resize_token_embeddings(ids[-1] + 1, mean_resizing=False)
        except (NotImplementedError, AttributeError) as err:
            raise ValueError(f"{type(causal_lm).__name__} has {rows} token embeddings and cannot resize them to "
                             f"hold tokenizer.time_tokens (ids up to {ids[-1]})") from err  # fmt: skip
    first = min(ids[0], rows)
    with torch.no_grad():
        for layer in {id(m): m for m in (causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings())
                      if m is not None}.values():  # fmt: skip
            weight = layer.weight  # (V, H) for both nn.Embedding and the head's nn.Linear
            weight[ids] = weight[:first].float().mean(0).to(weight.dtype)
            bias = getattr(layer, "bias", None)
            if bias is not None:
                bias[ids] = bias[:first].float().mean().to(bias.dtype)


def embedding_module_names(causal_lm: nn.Module) -> dict[str, str]:
    """``{"input": name, "output": name}`` of the embedding and (when not tied to it) the LM head, as the last
    component of their module names (what peft ``trainable_token_indices`` keys are matched against)."""
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in causal_lm.named_modules()}
    out = {"input": names[id(causal_lm.get_input_embeddings())]}
    head = causal_lm.get_output_embeddings()
    tied = head is not None and head.weight is causal_lm.get_input_embeddings().weight
    if head is not None and not tied:
        out["output"] = names[id(head)]
    return out
