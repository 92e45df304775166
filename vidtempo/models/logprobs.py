"""Log-probabilities of labelled tokens under a causal LM: the one computation that training (DPO) and
evaluation (multiple choice by option likelihood) share, kept here so neither imports the other.

The shift happens here: ``logits[:, t]`` scores ``labels[:, t + 1]``, so callers pass the unshifted ``labels``
aligned with ``input_ids`` (prompt, padding and video positions set to ``ignore_index``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidtempo.data.chat import IGNORE_INDEX


def shifted_token_nll(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Next-token NLL for causal LMs; 0 at ignored positions. logits (B, L, V), labels (B, L) -> (B, L-1).

    Example:
        >>> import torch
        >>> shifted_token_nll(torch.zeros(1, 3, 2), torch.tensor([[-100, 0, -100]]))  # log 2 at the labelled one
        tensor([[0.6931, 0.0000]])
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (B, L, V) and labels (B, L) with the same B and L, got logits "
            f"{tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    shift_logits = logits[:, :-1].float()  # (B, L-1, V): position t predicts token t+1
    shift_labels = labels[:, 1:].to(logits.device)  # (B, L-1)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return nll.view(shift_labels.shape)


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the labelled tokens of a causal LM, and how many tokens were summed.

    Logits are upcast to float32 before the log-softmax.

    Args:
        logits: (B, L, V) model outputs.
        labels: (B, L) target ids (unshifted), ``ignore_index`` where a token is not part of the response.
        ignore_index: label value to skip.

    Returns:
        ``(summed_logps (B,), lengths (B,))``: float32 sums over the response tokens and their int64 counts.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> logps, n = sequence_logps(logits, torch.tensor([[-100, 2, 3]]))
        >>> round(logps.item(), 4), n.item()  # 2 * log(1/4)
        (-2.7726, 2)
    """
    nll = shifted_token_nll(logits, labels, ignore_index)  # (B, L-1)
    lengths = (labels[:, 1:] != ignore_index).sum(dim=1)  # (B,)
    return -nll.sum(dim=1), lengths.to(nll.device)
