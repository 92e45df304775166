"""Log-probs of the labelled tokens straight from the LLM's final hidden states: the LM head runs only at the
positions whose next token is labelled, in chunks, so no full-vocabulary float32 copy of the whole sequence
is ever made.

A causal LM's usual path computes ``logits = lm_head(h)`` for every position, (B, L, V), and upcasts them
to float32 for the cross-entropy: at 12 k tokens x 152 k vocabulary one float32 copy is about 7 GB. Only the
answer tokens are scored (SFT labels, DPO answers), a few percent of a video sequence. :func:`token_logps`
gathers the hidden states of those positions, (N, H), and computes the head and the log-softmax
``chunk_size`` rows at a time; each chunk's logits are recomputed in the backward pass
(``torch.utils.checkpoint``), so at most one (chunk_size, V) float32 block lives at once, forward or backward.

Implementations (``LabelHead.impl``):

* ``chunked`` (default): the above; any head module (a plain Linear, tied embeddings, a LoRA-wrapped head).
* ``liger``: ``liger_fused_linear_cross_entropy`` of the ``liger-kernel`` package (Triton, CUDA only), which
  fuses the head matmul with the cross-entropy and never materialises the logits; one call per scored
  sequence (``reduction="sum"``), so per-sequence sums (DPO) get exact gradients. Refused with a clear error
  where the package or CUDA is missing, or where the head is not a plain ``nn.Linear``.
* ``full``: the head on every gathered position at once (no chunking; for comparison).

Example:
    >>> import torch
    >>> head = torch.nn.Linear(8, 50, bias=False)
    >>> hidden, labels = torch.randn(2, 5, 8), torch.tensor([[-100, -100, 3, 4, -100], [-100, 7, 8, 9, 1]])
    >>> rows, pos, targets = label_targets(labels)
    >>> logps = token_logps(hidden[rows, pos], head, targets, LabelHead(chunk_size=2))  # (N,) = (6,)
    >>> full = torch.log_softmax(head(hidden).float(), -1)[:, :-1].gather(-1, labels[:, 1:].clamp(min=0)[..., None])
    >>> bool(torch.allclose(logps, full[..., 0][labels[:, 1:] != -100]))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidtempo.models.interfaces import IGNORE_INDEX

HEAD_IMPLS: tuple[str, ...] = ("chunked", "liger", "full")

# Config attributes of transformers causal LMs that change the logits after the head (Gemma 2's soft-capping,
# Cohere's and Granite's scaling): the label head computes plain ``lm_head(h)``, so such models are refused.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@dataclass(frozen=True)
class LabelHead:
    """How the labelled tokens' log-probs are computed from final hidden states (see the module docstring).

    Args:
        impl: ``chunked``, ``liger`` or ``full``.
        chunk_size: rows of the head computed at once (``chunked``).

    Example:
        >>> LabelHead().impl, LabelHead(impl="full").chunk_size
        ('chunked', 1024)
    """

    impl: str = "chunked"
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        if self.impl not in HEAD_IMPLS:
            raise ValueError(f"loss head '{self.impl}' is unknown; valid: {', '.join(HEAD_IMPLS)}")
        if self.chunk_size < 1:
            raise ValueError(f"loss head chunk_size must be >= 1, got {self.chunk_size}")
        if self.impl == "liger":
            liger_function()  # refuse now, at build time, when the package is absent


def liger_function() -> Any:
    """``liger_kernel.transformers.functional.liger_fused_linear_cross_entropy``; a one-line error without it."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError as err:
        raise ImportError(
            "loss head 'liger' needs the liger-kernel package (pip install liger-kernel; Triton kernels, CUDA "
            "only), which is not installed here; use loss_head: chunked (the default, same result)"
        ) from err
    return liger_fused_linear_cross_entropy


def label_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, ...]:
    """Where the next token is labelled: ``(rows (N,), positions (N,), targets (N,))`` of (B, L) unshifted
    labels (``hidden[rows, positions]`` scores ``targets``; position t predicts label t + 1).

    Example:
        >>> [t.tolist() for t in label_targets(torch.tensor([[-100, 5, 6], [-100, -100, 2]]))]
        [[0, 0, 1], [0, 1, 1], [5, 6, 2]]
    """
    shifted = labels[:, 1:]  # (B, L-1)
    rows, positions = (shifted != ignore_index).nonzero(as_tuple=True)
    return rows, positions, shifted[rows, positions]


def _chunk_logps(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(n, H) hidden -> (n,) float32 log p(target): the same float32 cross-entropy as the full-logits path."""
    return -F.cross_entropy(head(hidden).float(), targets, reduction="none")


def token_logps(
    hidden: torch.Tensor,
    head: nn.Module,
    targets: torch.Tensor,
    spec: LabelHead | None = None,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
) -> torch.Tensor:
    """Float32 log-probs of ``targets`` under ``head`` at the gathered hidden states.

    Args:
        hidden: (N, H) final hidden states of the scored positions.
        head: the LM head (``hidden -> (N, V)`` logits).
        targets: (N,) token ids.
        spec: implementation and chunk size (default ``LabelHead()``).
        groups / num_groups: (N,) sequence index of each token; only ``liger`` needs them (one fused call
            per sequence, so per-sequence sums get exact gradients).

    Returns:
        (N,) float32 log-probs (``liger``: per-token values are not available, so each group's sum is returned
        on the group's first token and 0 elsewhere; sums over groups are exact).
    """
    spec = spec or LabelHead()
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32) + hidden.sum() * 0  # stays attached to the graph
    if spec.impl == "full":
        return _chunk_logps(head, hidden, targets)
    if spec.impl == "liger":
        return _liger_logps(hidden, head, targets, groups, num_groups)
    out = []
    for start in range(0, hidden.shape[0], spec.chunk_size):
        h, t = hidden[start : start + spec.chunk_size], targets[start : start + spec.chunk_size]
        if torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in head.parameters())):
            out.append(checkpoint(_chunk_logps, head, h, t, use_reentrant=False))
        else:
            out.append(_chunk_logps(head, h, t))
    return torch.cat(out)


def _liger_logps(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, groups: torch.Tensor | None,
                 num_groups: int | None) -> torch.Tensor:  # fmt: skip
    fused = liger_function()
    if not isinstance(head, nn.Linear) or type(head) is not nn.Linear:
        raise ValueError(f"loss head 'liger' needs a plain nn.Linear LM head, got {type(head).__name__} "
                         "(a LoRA adapter on lm_head?); use loss_head: chunked")  # fmt: skip
    if hidden.device.type != "cuda":
        raise ValueError(f"loss head 'liger' runs Triton kernels on CUDA only; the model is on {hidden.device}; "
                         "use loss_head: chunked")  # fmt: skip
    if groups is None:
        groups, num_groups = torch.zeros_like(targets), 1
    assert num_groups is not None
    firsts, sums = [], []
    for g in range(num_groups):  # one fused call per sequence: reduction "sum" takes a scalar gradient
        idx = (groups == g).nonzero().flatten()
        if len(idx) == 0:
            continue
        result = fused(hidden[idx], head.weight, targets[idx], head.bias, reduction="sum")
        loss = result[0] if isinstance(result, tuple) else getattr(result, "loss", result)
        firsts.append(idx[0])
        sums.append(-loss.float())
    out = torch.zeros(targets.shape[0], dtype=torch.float32, device=hidden.device)
    return out.index_put((torch.stack(firsts),), torch.stack(sums))


def label_loss(hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module, spec: LabelHead | None = None,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:  # fmt: skip
    """Mean next-token cross-entropy over the labelled tokens of (B, L, H) hidden states and (B, L) labels:
    what ``cross_entropy(lm_head(hidden)[:, :-1].float(), labels[:, 1:], ignore_index)`` gives, without the
    (B, L, V) logits. A batch without labelled tokens gives NaN, as the full-logits mean does."""
    rows, positions, targets = label_targets(labels, ignore_index)
    logps = token_logps(hidden[rows, positions], head, targets, spec)
    return -logps.sum() / targets.numel()


# ------------------------------------------------------------------------------------- transformers plumbing
def unwrap_peft(model: nn.Module) -> Any:
    """The transformers model inside a peft wrapper (the LoRA layers stay in place), or ``model`` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def check_plain_head(config: Any) -> None:
    """Refuse models whose logits are post-processed after the head (the label head would differ)."""
    for name in _LOGIT_POSTPROCESSING:
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            raise ValueError(f"the label-position loss head computes plain lm_head(h); this LLM's config sets "
                             f"{name}={value}: use objective.loss_head: full")  # fmt: skip


def causal_lm_parts(hf_model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder returning final-norm hidden states, LM head) of a transformers causal LM (peft unwrapped)."""
    base = unwrap_peft(hf_model)
    check_plain_head(base.config)
    return base.get_decoder(), base.get_output_embeddings()


def causal_lm_label_forward(
    hf_model: nn.Module,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    spec: LabelHead,
    return_hidden: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Decoder + label head of a transformers causal LM: ``(mean CE over labelled tokens, hidden states or None)``.

    Shapes: embeds (B, L, H), attention_mask (B, L), labels (B, L) unshifted.
    """
    decoder, head = causal_lm_parts(hf_model)
    out = decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False,
                  **({"output_hidden_states": True} if return_hidden else {}))  # fmt: skip
    loss = label_loss(out.last_hidden_state, labels, head, spec)
    return loss, (tuple(out.hidden_states) if return_hidden else None)
