"""Preference-optimisation losses: DPO and its hinge / IPO / robust variants, plus the RPO NLL term.

All losses work on per-example *summed* response log-probs, shape (B,), as produced by
:func:`vidtempo.models.logprobs.sequence_logps` (re-exported here). Formulas and their sources are in
``docs/methods/dpo_losses.md``:

* ``sigmoid``: DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7) with optional conservative label
  smoothing eps (cDPO, Mitchell 2023 "A note on DPO with noisy preferences"):
  ``-(1 - eps) log sig(z) - eps log sig(-z)`` with ``z = beta * (chosen log-ratio - rejected log-ratio)``.
* ``hinge``: ``relu(1 - z)`` (RSO, Liu et al. 2023, arXiv 2309.06657, after SLiC, arXiv 2305.10425).
* ``ipo``: ``(h - 1 / (2 beta))**2`` (Azar et al. 2023, arXiv 2310.12036, eq. 17) where ``h`` is the log-ratio
  difference; per-token averaged when response lengths are given.
* ``robust``: unbiased loss under a preference flip rate eps (rDPO, Chowdhury et al. 2024, arXiv 2403.00409):
  ``((1 - eps) l(z) - eps l(-z)) / (1 - 2 eps)`` with ``l(z) = -log sig(z)``.

Example:
    >>> import torch
    >>> losses, rc, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]),
    ...                           torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    >>> round(losses.item(), 4)  # -log sigmoid(0.5 * (1 - (-1)))
    0.3133
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# sequence_logps lives in the neutral models.logprobs (eval scores options with it); re-exported here
from vidtempo.models.logprobs import sequence_logps, shifted_token_nll

LOSS_TYPES: tuple[str, ...] = ("sigmoid", "hinge", "ipo", "robust")
_SMOOTHED_LOSSES = ("sigmoid", "robust")


def _check_logps(**tensors: torch.Tensor | None) -> int:
    """Every given tensor must be 1-D with the same length; returns that length B."""
    size: int | None = None
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"dpo_loss: '{name}' must be a 1-D tensor (B,) of summed log-probs, got {shape}")
        if size is None:
            size = t.shape[0]
        elif t.shape[0] != size:
            raise ValueError(
                f"dpo_loss: '{name}' has batch size {t.shape[0]}, expected {size} like the others"
            )
    assert size is not None
    return size


def _check_options(beta: float, loss_type: str, label_smoothing: float) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(
            f"dpo_loss: unknown loss_type '{loss_type}'; valid loss types: {', '.join(LOSS_TYPES)}"
        )
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    if label_smoothing and loss_type not in _SMOOTHED_LOSSES:
        raise ValueError(
            f"dpo_loss: label_smoothing={label_smoothing} is only defined for loss types "
            f"{', '.join(_SMOOTHED_LOSSES)}, not '{loss_type}'; set it to 0"
        )
    upper = 0.5 if loss_type == "robust" else 1.0
    if not 0.0 <= label_smoothing < upper:
        raise ValueError(
            f"dpo_loss: label_smoothing for '{loss_type}' must lie in [0, {upper}), got {label_smoothing}"
        )


def _ipo_delta(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    chosen_lengths: torch.Tensor | None,
    rejected_lengths: torch.Tensor | None,
) -> torch.Tensor:
    """IPO's h: the log-ratio difference, per-token averaged when both lengths are given. -> (B,)"""
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("dpo_loss: give both chosen_lengths and rejected_lengths for 'ipo', or neither")
    if chosen_lengths is None or rejected_lengths is None:
        return chosen_logratios - rejected_logratios
    chosen_avg = chosen_logratios / chosen_lengths.to(chosen_logratios).clamp(min=1.0)
    rejected_avg = rejected_logratios / rejected_lengths.to(rejected_logratios).clamp(min=1.0)
    return chosen_avg - rejected_avg


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    reference_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example DPO-family losses and implicit rewards.

    Args:
        policy_chosen_logps: (B,) summed log-probs of the chosen responses under the policy.
        policy_rejected_logps: (B,) same for the rejected responses.
        ref_chosen_logps: (B,) summed log-probs of the chosen responses under the reference model
            (ignored, and may be None, when ``reference_free``).
        ref_rejected_logps: (B,) same for the rejected responses.
        beta: inverse temperature of the implicit reward (IPO's tau).
        loss_type: one of :data:`LOSS_TYPES`.
        label_smoothing: assumed preference-flip rate eps; ``sigmoid`` (cDPO) and ``robust`` (rDPO) only.
        chosen_lengths: (B,) response token counts; with ``rejected_lengths`` makes IPO use per-token
            averaged log-ratios (other losses ignore lengths).
        rejected_lengths: (B,) response token counts of the rejected responses.
        reference_free: use a uniform reference (reference log-probs = 0).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each (B,) float32: the per-example loss (take
        ``.mean()`` for the batch loss) and the detached rewards ``beta * (policy - reference)``.

    Raises:
        ValueError: unknown ``loss_type``, bad ``beta``/``label_smoothing`` or mismatched shapes.

    Example:
        >>> import torch
        >>> lc, lr = torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -5.0])
        >>> losses, rc, rr = dpo_loss(lc, lr, lc.detach() - 1, lr.detach() + 1, loss_type="hinge")
        >>> [round(x, 2) for x in losses.tolist()]
        [0.8, 0.8]
    """
    _check_options(beta, loss_type, label_smoothing)
    if reference_free:
        ref_chosen_logps = torch.zeros_like(policy_chosen_logps)
        ref_rejected_logps = torch.zeros_like(policy_rejected_logps)
    elif ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError("dpo_loss: reference log-probs are None; pass them or set reference_free=True")
    _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
    )
    # Upcast: bf16 sums of hundreds of token log-probs lose the small differences the loss depends on.
    chosen_logratios = policy_chosen_logps.float() - ref_chosen_logps.float().to(policy_chosen_logps.device)
    rejected_logratios = policy_rejected_logps.float() - ref_rejected_logps.float().to(
        policy_rejected_logps.device
    )
    z = beta * (chosen_logratios - rejected_logratios)  # (B,)
    eps = label_smoothing

    if loss_type == "sigmoid":
        losses = -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - z)
    elif loss_type == "ipo":
        h = _ipo_delta(chosen_logratios, rejected_logratios, chosen_lengths, rejected_lengths)
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:  # robust
        losses = ((1.0 - eps) * -F.logsigmoid(z) - eps * -F.logsigmoid(-z)) / (1.0 - 2.0 * eps)

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def rpo_nll(
    chosen_logits: torch.Tensor, chosen_labels: torch.Tensor, *, ignore_index: int = -100
) -> torch.Tensor:
    """RPO's NLL term: mean next-token cross-entropy over every chosen-response token in the batch.

    This is a token-level mean over the whole batch (as the ``rpo_alpha`` term of TRL <= 0.x used by
    ms-swift 3.7, and TRL 1.16's ``"sft"`` loss), not a mean of per-sequence means (Pang et al. 2024,
    arXiv 2404.19733, normalise per sequence; the difference is only a weighting of long answers).

    Args:
        chosen_logits: (B, L, V) policy logits on prompt + chosen response.
        chosen_labels: (B, L) chosen ids, ``ignore_index`` outside the response (unshifted).
        ignore_index: label value to skip.

    Returns:
        Scalar float32 NLL; an all-ignored batch gives 0 (still attached to the graph).

    Example:
        >>> import torch
        >>> round(rpo_nll(torch.zeros(1, 3, 4), torch.tensor([[-100, 1, 2]])).item(), 4)  # log(4)
        1.3863
    """
    nll = shifted_token_nll(chosen_logits, chosen_labels, ignore_index)  # (B, L-1)
    count = (chosen_labels[:, 1:] != ignore_index).sum()
    return nll.sum() / count.clamp(min=1).to(nll.dtype)


@dataclass
class DPOLossOutput:
    """Result of :class:`DPOLoss`.

    Attributes:
        loss: scalar to optimise: mean preference loss + ``rpo_alpha`` * NLL.
        chosen_rewards: (B,) detached ``beta * (log pi(y_w) - log pi_ref(y_w))``.
        rejected_rewards: (B,) the same for the rejected responses.
        margins: (B,) ``chosen_rewards - rejected_rewards``.
        accuracy: scalar fraction of pairs with ``chosen_rewards > rejected_rewards``.
        preference_loss: scalar mean preference loss alone.
        nll: scalar RPO NLL term (None when ``rpo_alpha`` is None).
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    margins: torch.Tensor
    accuracy: torch.Tensor
    preference_loss: torch.Tensor
    nll: torch.Tensor | None = None

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar logging dict: ``rewards/chosen``, ``rewards/margins``, ``rewards/accuracy``, ... ."""
        out = {
            "loss": self.loss.item(),
            "loss/preference": self.preference_loss.item(),
            "rewards/chosen": self.chosen_rewards.mean().item(),
            "rewards/rejected": self.rejected_rewards.mean().item(),
            "rewards/margins": self.margins.mean().item(),
            "rewards/accuracy": self.accuracy.item(),
        }
        if self.nll is not None:
            out["loss/nll"] = self.nll.item()
        return {prefix + k: v for k, v in out.items()}


class DPOLoss(nn.Module):
    """Configured DPO-family loss with the optional RPO NLL term on the chosen answer.

    Args:
        beta: implicit-reward temperature (TEMPLE: 0.1).
        loss_type: one of :data:`LOSS_TYPES`.
        label_smoothing: preference-flip rate for ``sigmoid`` / ``robust``.
        rpo_alpha: weight of the NLL term (TEMPLE / ms-swift 3.7: 1.0); None disables it.
        reference_free: ignore reference log-probs (uniform reference).

    Example:
        >>> import torch
        >>> loss_fn = DPOLoss(beta=0.1, rpo_alpha=1.0)
        >>> out = loss_fn(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]),
        ...               torch.tensor([-4.0]), chosen_nll=torch.tensor(0.5))
        >>> round(out.loss.item(), 4), out.accuracy.item()  # -log sigmoid(0.2) + 0.5
        (1.0981, 1.0)
    """

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        rpo_alpha: float | None = None,
        reference_free: bool = False,
    ) -> None:
        super().__init__()
        _check_options(beta, loss_type, label_smoothing)
        if rpo_alpha is not None and rpo_alpha < 0:
            raise ValueError(f"DPOLoss: rpo_alpha must be >= 0 or None, got {rpo_alpha}")
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.rpo_alpha = rpo_alpha
        self.reference_free = reference_free

    def extra_repr(self) -> str:
        return (
            f"beta={self.beta}, loss_type={self.loss_type!r}, label_smoothing={self.label_smoothing}, "
            f"rpo_alpha={self.rpo_alpha}, reference_free={self.reference_free}"
        )

    def forward(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        ref_chosen_logps: torch.Tensor | None,
        ref_rejected_logps: torch.Tensor | None,
        *,
        chosen_lengths: torch.Tensor | None = None,
        rejected_lengths: torch.Tensor | None = None,
        chosen_nll: torch.Tensor | None = None,
    ) -> DPOLossOutput:
        """Batch loss from (B,) log-probs; ``chosen_nll`` (:func:`rpo_nll`) is needed with ``rpo_alpha``."""
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            reference_free=self.reference_free,
        )
        preference_loss = losses.mean()
        loss, nll = preference_loss, None
        if self.rpo_alpha is not None:
            if chosen_nll is None:
                raise ValueError(f"DPOLoss: rpo_alpha={self.rpo_alpha} needs chosen_nll (see rpo_nll)")
            nll = chosen_nll.float()
            loss = preference_loss + self.rpo_alpha * nll
        margins = chosen_rewards - rejected_rewards
        return DPOLossOutput(
            loss=loss,
            chosen_rewards=chosen_rewards,
            rejected_rewards=rejected_rewards,
            margins=margins,
            accuracy=(margins > 0).float().mean(),
            preference_loss=preference_loss,
            nll=nll,
        )

    def from_logits(
        self,
        chosen_logits: torch.Tensor,
        rejected_logits: torch.Tensor,
        chosen_labels: torch.Tensor,
        rejected_labels: torch.Tensor,
        ref_chosen_logps: torch.Tensor | None,
        ref_rejected_logps: torch.Tensor | None,
        *,
        ignore_index: int = -100,
    ) -> DPOLossOutput:
        """Same as :meth:`forward`, starting from policy logits (B, L, V) and unshifted labels (B, L).

        Chosen and rejected sides may have different L (and, for input-side pairs, different videos).
        """
        chosen_logps, chosen_lengths = sequence_logps(chosen_logits, chosen_labels, ignore_index=ignore_index)
        rejected_logps, rejected_lengths = sequence_logps(
            rejected_logits, rejected_labels, ignore_index=ignore_index
        )
        nll = None
        if self.rpo_alpha is not None:
            nll = rpo_nll(chosen_logits, chosen_labels, ignore_index=ignore_index)
        return self(
            chosen_logps,
            rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            chosen_nll=nll,
        )
