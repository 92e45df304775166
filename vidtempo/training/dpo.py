"""Direct preference optimisation of a video LLM (TEMPO / TEMPLE), in the same family as ``SFTModule``.

One step: the policy scores the chosen and the rejected answer of each pair (summed log-probs of the answer
tokens only, from the labels ``VideoLLM.forward`` splices), a *reference* scores them too (no gradient), and
:class:`~vidtempo.training.losses.DPOLoss` turns the four (B,) vectors into the loss (sigmoid / hinge / ipo /
robust, label smoothing, optional RPO NLL on the chosen answer). Logged: loss, preference loss, NLL, chosen /
rejected rewards, margins, reward accuracy and the policy log-probs.

Reference strategies (``reference=``):

* ``adapter_off``: the policy itself with its LoRA adapter disabled (no second copy; TRL's behaviour with a
  peft model). Only valid when every trainable parameter is an adapter weight.
* ``frozen_copy``: a deep copy of the model frozen when the module is built, i.e. at the start of each
  recipe stage (so the reference is refreshed per stage). Costs one extra model in memory.
* ``precomputed``: the batch carries ``ref_chosen_logps`` / ``ref_rejected_logps`` (from the pairs' meta).
* ``auto``: ``adapter_off`` when the model has LoRA and nothing but adapters trains, else ``frozen_copy``.

With ``merge_lora_after`` on a stage, the next stage's fresh adapter makes ``adapter_off`` equal the merged
previous stage: TEMPLE's per-stage reference refresh (``docs/methods/tempo.md``).

Example:
    >>> import torch
    >>> module = DPOModule(model=torch.nn.Linear(2, 2), optim={"lr": 5e-6}, beta=0.1, rpo_alpha=1.0)
    >>> module.reference.name, module.loss_fn.beta
    ('frozen_copy', 0.1)
"""

from __future__ import annotations

import contextlib
import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidtempo.data.collate import VideoTextBatch
from vidtempo.data.preference_collate import PreferenceBatch, PreferenceCollator
from vidtempo.models.interfaces import VideoModel
from vidtempo.models.label_head import LabelHead
from vidtempo.models.prefix_share import SHARING, PairLayout, call_with_hooks, score_pairs, supports_pairs
from vidtempo.training.losses import DPOLoss, DPOLossOutput, rpo_nll, sequence_logps
from vidtempo.training.objective import Objective
from vidtempo.training.optim import OptimSettings

log = logging.getLogger(__name__)

REFERENCES: tuple[str, ...] = ("auto", "adapter_off", "frozen_copy", "precomputed")


# ------------------------------------------------------------------------------------------- scoring
def answer_logps(model: VideoModel, side: VideoTextBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``model`` on one side of a pair batch.

    Returns:
        ``(logps (B,), logits (B, L', V), labels (B, L'))``: summed log-probs of the answer tokens, with the
        labels aligned to the logits (the model's spliced labels when it returns them).
    """
    out = model(**side.model_inputs())
    labels = getattr(out, "labels", None)
    if labels is None:
        labels = side.labels
    logps, _ = sequence_logps(out.logits, labels)
    return logps, out.logits, labels


def find_peft_model(model: nn.Module) -> Any | None:
    """The first peft ``PeftModel`` inside ``model`` (``VideoLLM.llm.model`` with LoRA), or None."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return None
    return next((m for m in model.modules() if isinstance(m, PeftModel)), None)


def trainable_non_adapter(model: nn.Module) -> list[str]:
    """Names of trainable parameters that are not LoRA adapter weights."""
    return [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]


# ------------------------------------------------------------------------------------------- references
class Reference(ABC):
    """How the reference log-probs of a batch are obtained (see the module docstring)."""

    name = ""

    @abstractmethod
    def logps(self, policy: VideoModel, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen (B,), rejected (B,)) reference log-probs, without gradient."""

    def pair_logps(self, policy: VideoModel, batch: PreferenceBatch, layout: PairLayout, head: LabelHead,
                   sharing: str) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The same in one forward per batch (``prefix_share``), given the policy's ``layout`` of the batch."""
        return self.logps(policy, batch)


class AdapterOffReference(Reference):
    """The policy with its LoRA adapter disabled: the base (or the merged previous stage) weights.

    Args:
        policy: the model being trained; it must hold a peft model and train adapters only.
    """

    name = "adapter_off"

    def __init__(self, policy: VideoModel) -> None:
        if find_peft_model(policy) is None:
            raise ValueError(
                "reference='adapter_off' needs a LoRA adapter on the LLM (model.trainable.llm: lora)"
            )
        others = trainable_non_adapter(policy)
        if others:
            raise ValueError(
                "reference='adapter_off' is the stage-start model only when only LoRA adapters train; "
                f"trainable non-adapter parameters: {others[:3]}{' ...' if len(others) > 3 else ''}. "
                "Freeze them (trainable: {llm: lora} only) or use reference: frozen_copy"
            )

    @torch.no_grad()
    def logps(self, policy: VideoModel, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        peft_model = find_peft_model(policy)
        if peft_model is None:
            raise RuntimeError("reference='adapter_off': the LoRA adapter disappeared (merged mid-stage?)")
        with peft_model.disable_adapter():
            return answer_logps(policy, batch.chosen)[0], answer_logps(policy, batch.rejected)[0]

    @torch.no_grad()
    def pair_logps(self, policy: VideoModel, batch: PreferenceBatch, layout: PairLayout, head: LabelHead,
                   sharing: str) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Adapter off, same rows as the policy's pass: its embeddings are reused when nothing before the LLM
        trains (no second video encoding), and the prefix is shared the same way."""
        peft_model = find_peft_model(policy)
        if peft_model is None:
            raise RuntimeError("reference='adapter_off': the LoRA adapter disappeared (merged mid-stage?)")
        with peft_model.disable_adapter():
            scores, _ = call_with_hooks(policy, score_pairs, batch.chosen.model_inputs(),
                                        batch.rejected.model_inputs(), head, sharing, reuse=layout)  # fmt: skip
        return scores.chosen_logps, scores.rejected_logps


class FrozenCopyReference(Reference):
    """A deep copy of the model taken now, frozen and in eval mode.

    The copy is deliberately not a sub-module of the LightningModule: it stays out of checkpoints and out of
    the optimiser; it follows the policy's device and floating dtype on first use.
    """

    name = "frozen_copy"

    def __init__(self, policy: VideoModel) -> None:
        self.model = copy.deepcopy(policy).eval()
        self.model.requires_grad_(False)

    def _follow(self, policy: VideoModel) -> None:
        ref_param = next(self.model.parameters(), None)
        pol_param = next((p for p in policy.parameters() if p.is_floating_point()), None)
        if ref_param is None or pol_param is None:
            return
        if ref_param.device != pol_param.device or ref_param.dtype != pol_param.dtype:
            self.model.to(device=pol_param.device, dtype=pol_param.dtype)

    @torch.no_grad()
    def logps(self, policy: VideoModel, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        self._follow(policy)
        return answer_logps(self.model, batch.chosen)[0], answer_logps(self.model, batch.rejected)[0]

    @torch.no_grad()
    def pair_logps(self, policy: VideoModel, batch: PreferenceBatch, layout: PairLayout, head: LabelHead,
                   sharing: str) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        self._follow(policy)
        if supports_pairs(self.model) is not None:
            return self.logps(policy, batch)
        scores, _ = call_with_hooks(self.model, score_pairs, batch.chosen.model_inputs(),
                                    batch.rejected.model_inputs(), head, sharing)  # fmt: skip
        return scores.chosen_logps, scores.rejected_logps


class PrecomputedReference(Reference):
    """Reference log-probs read from the batch (``meta.ref_chosen_logps`` / ``meta.ref_rejected_logps``)."""

    name = "precomputed"

    def logps(self, policy: VideoModel, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.ref_chosen_logps is None or batch.ref_rejected_logps is None:
            raise ValueError(
                "reference='precomputed' but some pairs of this batch lack meta 'ref_chosen_logps' / "
                f"'ref_rejected_logps' (pairs {batch.ids[:5]}); add them to every record of the pair file"
            )
        return batch.ref_chosen_logps, batch.ref_rejected_logps


def build_reference(kind: str, policy: VideoModel) -> Reference:
    """Resolve ``auto`` and build the reference strategy for ``policy`` as it is now."""
    if kind not in REFERENCES:
        raise ValueError(f"DPOModule: unknown reference '{kind}'; valid: {', '.join(REFERENCES)}")
    if kind == "auto":
        lora_only = find_peft_model(policy) is not None and not trainable_non_adapter(policy)
        kind = "adapter_off" if lora_only else "frozen_copy"
        log.info("DPO reference: %s", kind)
    if kind == "adapter_off":
        return AdapterOffReference(policy)
    if kind == "frozen_copy":
        return FrozenCopyReference(policy)
    return PrecomputedReference()


# ------------------------------------------------------------------------------------------- module
@dataclass
class DPOStepOutput:
    """One DPO step: the loss output plus the policy and reference log-probs, each (B,)."""

    loss: DPOLossOutput
    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor
    ref_rejected_logps: torch.Tensor
    prefix_shared: bool = False

    def metrics(self, prefix: str) -> dict[str, float]:
        out = self.loss.metrics(prefix)
        out[f"{prefix}logps/chosen"] = self.policy_chosen_logps.detach().mean().item()
        out[f"{prefix}logps/rejected"] = self.policy_rejected_logps.detach().mean().item()
        out[f"{prefix}prefix_shared"] = float(self.prefix_shared)
        return out


class DPOModule(Objective):
    """DPO of a ``VideoModel`` on :class:`~vidtempo.data.preference_collate.PreferenceBatch` batches.

    Args:
        model: the policy; ``forward(**side.model_inputs())`` returns ``.logits`` (and ``.labels``).
        optim: optimiser/schedule settings (``OptimSettings`` or a dict of its fields).
        max_skip_fraction: fail the run when more than this fraction of pairs could not be decoded.
        beta: implicit-reward temperature (TEMPLE: 0.1).
        loss_type: ``sigmoid``, ``hinge``, ``ipo`` or ``robust``.
        label_smoothing: preference-flip rate for ``sigmoid`` / ``robust``.
        rpo_alpha: weight of the NLL term on the chosen answer (TEMPLE / ms-swift 3.7: 1.0); None = off.
        reference: ``auto``, ``adapter_off``, ``frozen_copy`` or ``precomputed`` (module docstring).
        prefix_sharing: ``auto`` (default): pairs with the same video and prompt run as one row with the
            prefix computed once (``vidtempo.models.prefix_share``); ``off``: chosen and rejected rows as one
            2B batch. Either way one forward per batch and each video encoded once per pair.
        loss_head: ``chunked`` (default: the LM head at the answer positions only, ``loss_chunk_size`` rows at
            a time), ``liger`` (liger-kernel's fused linear cross-entropy, CUDA, where installed), ``full``
            (answer positions, one block) or ``logits`` (two forwards with full logits: the path before issue
            27, for comparison).
        loss_chunk_size: rows per chunk of the ``chunked`` head.

    Example:
        >>> import torch
        >>> module = DPOModule(model=torch.nn.Linear(2, 2), loss_type="hinge", reference="precomputed")
        >>> module.reference.name, module.collator_class.__name__
        ('precomputed', 'PreferenceCollator')
    """

    collator_class = PreferenceCollator  # the collator this objective's batches come from

    def __init__(
        self,
        model: VideoModel,
        optim: OptimSettings | dict[str, Any] | None = None,
        max_skip_fraction: float = 0.1,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        rpo_alpha: float | None = None,
        reference: str = "auto",
        prefix_sharing: str = "auto",
        loss_head: str = "chunked",
        loss_chunk_size: int = 1024,
    ) -> None:
        super().__init__(model, optim, max_skip_fraction)
        self.loss_head = None if loss_head == "logits" else LabelHead(loss_head, loss_chunk_size)
        self.loss_fn = DPOLoss(
            beta=beta, loss_type=loss_type, label_smoothing=label_smoothing, rpo_alpha=rpo_alpha
        )
        self.reference = build_reference(reference, model)
        if prefix_sharing not in SHARING:
            raise ValueError(f"DPOModule: prefix_sharing must be one of {', '.join(SHARING)}, got '{prefix_sharing}'")
        self.prefix_sharing = prefix_sharing
        self.last_prefix_shared = False  # whether the last forward shared its pairs' prefix (perf/* FLOPs read it)
        self._reasons: set[str] = set()  # fall-back reasons already logged

    @classmethod
    def check_recipe(cls, stage: Any, recipe: str, prefix: str) -> None:
        """DPO takes no auxiliary losses (its batches are pairs, not per-frame targets)."""
        from vidtempo.config.errors import RecipeError

        if (stage.get("objective") or {}).get("aux"):
            raise RecipeError("the dpo objective takes no auxiliary losses", recipe=recipe,
                              key=f"{prefix}objective.aux")  # fmt: skip

    def forward(self, batch: PreferenceBatch) -> DPOStepOutput:
        """Policy + reference log-probs and the DPO loss for one batch: one forward for both sides (shared
        prefix when possible, ``prefix_share``), or two forwards with full logits (``loss_head: logits``, or a
        model without a pair forward)."""
        unsupported = supports_pairs(self.model)
        if self.loss_head is None or unsupported is not None:
            if unsupported is not None:
                self._note(f"two forwards: {unsupported}")
            self.last_prefix_shared = False
            return self._two_forwards(batch)
        scores, layout = call_with_hooks(self.model, score_pairs, batch.chosen.model_inputs(),
                                         batch.rejected.model_inputs(), self.loss_head, self.prefix_sharing)  # fmt: skip
        if layout.reason is not None:
            self._note(f"prefix not shared: {layout.reason}")
        self.last_prefix_shared = layout.shared
        with _eval_mode(self.model, self.reference.name == "adapter_off"):
            ref_chosen, ref_rejected = self.reference.pair_logps(self.model, batch, layout, self.loss_head,
                                                                 self.prefix_sharing)  # fmt: skip
        loss = self.loss_fn(
            scores.chosen_logps, scores.rejected_logps, ref_chosen.to(scores.chosen_logps.device),
            ref_rejected.to(scores.rejected_logps.device), chosen_lengths=scores.chosen_lengths,
            rejected_lengths=scores.rejected_lengths,
            chosen_nll=scores.chosen_nll if self.loss_fn.rpo_alpha is not None else None,
        )  # fmt: skip
        return DPOStepOutput(loss, scores.chosen_logps, scores.rejected_logps, ref_chosen, ref_rejected,
                             prefix_shared=layout.shared)  # fmt: skip

    def _note(self, reason: str) -> None:
        if reason not in self._reasons:
            self._reasons.add(reason)
            log.info("DPO: %s", reason)

    def _two_forwards(self, batch: PreferenceBatch) -> DPOStepOutput:
        """The path before issue 27: chosen and rejected as two forwards with full (B, L, V) logits."""
        chosen_logps, chosen_logits, chosen_labels = answer_logps(self.model, batch.chosen)
        rejected_logps, _, rejected_labels = answer_logps(self.model, batch.rejected)
        with _eval_mode(self.model, self.reference.name == "adapter_off"):
            ref_chosen, ref_rejected = self.reference.logps(self.model, batch)
        nll = rpo_nll(chosen_logits, chosen_labels) if self.loss_fn.rpo_alpha is not None else None
        loss = self.loss_fn(
            chosen_logps, rejected_logps, ref_chosen.to(chosen_logps.device), ref_rejected.to(rejected_logps.device),
            chosen_lengths=_answer_lengths(chosen_labels), rejected_lengths=_answer_lengths(rejected_labels),
            chosen_nll=nll,
        )  # fmt: skip
        return DPOStepOutput(loss, chosen_logps, rejected_logps, ref_chosen, ref_rejected)

    def compute_loss(self, batch: PreferenceBatch, stage: str) -> tuple[torch.Tensor, dict[str, Any]]:
        out = self(batch)
        metrics = {k.removeprefix(f"{stage}/"): v for k, v in out.metrics(f"{stage}/").items()
                   if k != f"{stage}/loss"}  # fmt: skip
        return out.loss.loss, metrics

    def checkpoint_state(self) -> dict[str, Any]:
        return {"reference": self.reference.name}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        saved = state.get("reference")
        if saved and saved != self.reference.name:
            log.warning("resuming with reference '%s' but the checkpoint was trained with '%s'",
                        self.reference.name, saved)  # fmt: skip


def _answer_lengths(labels: torch.Tensor) -> torch.Tensor:
    """(B,) number of scored answer tokens (shifted like ``sequence_logps``)."""
    return (labels[:, 1:] != -100).sum(dim=1)


@contextlib.contextmanager
def _eval_mode(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Dropout off while the policy doubles as its own reference (adapter_off), restored afterwards."""
    if not enabled or not model.training:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()
