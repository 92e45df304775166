"""``Objective``: the base LightningModule of every training objective (SFT, DPO, yours).

It owns what every objective needs, so a subclass writes only its loss:

* optimiser and schedule (``optim``), with the auxiliary-loss heads as parts of their own;
* skip counting (samples whose video could not be decoded) and the skip threshold;
* checkpoint hooks (skip counters, plus :meth:`Objective.checkpoint_state` of the subclass);
* step logging (``<stage>/loss`` and whatever :meth:`Objective.compute_loss` returns as metrics);
* FSDP2 sharding under ``ModelParallelStrategy`` (``configure_model``);
* auxiliary losses (``objective.aux``, ``vidtempo.training.auxiliary``), added to the main loss;
* its collator (:attr:`Objective.collator_class`) and the validation of its recipe section
  (:meth:`Objective.check_recipe`), called before anything is built.

A new objective is one file with a subclass, named in a recipe by dotted path (``objective: {_target_:
mylab.objectives.MyObjective}``) or by an alias in the ``objective`` registry: nothing else changes.

Example:
    >>> import torch
    >>> class L2(Objective):
    ...     def compute_loss(self, batch, stage):
    ...         return self.model(batch).pow(2).mean(), {}
    >>> obj = L2(model=torch.nn.Linear(2, 2), optim={"lr": 0.1})
    >>> obj.optim.lr, obj.max_skip_fraction, list(obj.aux)
    (0.1, 0.1, [])
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from vidtempo.data.collate import VideoCollator
from vidtempo.models.interfaces import VideoModel, VideoModelOutput
from vidtempo.models.label_head import LabelHead
from vidtempo.training.auxiliary.base import AuxLoss, bind_aux
from vidtempo.training.optim import OptimSettings, lightning_optimizers
from vidtempo.training.skips import SkipTracker


class Objective(L.LightningModule):
    """Base class of training objectives (see the module docstring).

    Args:
        model: the model being trained (a :class:`~vidtempo.models.interfaces.VideoModel`).
        optim: optimiser/schedule settings (``OptimSettings`` or a dict of its fields).
        max_skip_fraction: fail the run when more than this fraction of samples could not be decoded.
        aux: auxiliary losses by name (``AuxLoss`` objects; the recipe's ``objective.aux``), added to the
            main loss with their weights and logged as ``<stage>/<name>_loss``.
        targets: channel count of each per-frame batch target the collator makes (``data.collator.targets``;
            the trainer fills it in), which sizes the auxiliary heads.

    The class attribute :attr:`loss_head` says how the LM head scores the labelled tokens
    (``vidtempo.models.label_head``): by default ``LabelHead()``, the head only at the label positions, 1,024
    rows at a time (no (B, L, V) logits); None = the model's full logits. ``DPOModule`` takes it as recipe keys
    (``loss_head``, ``loss_chunk_size``); another objective sets it on its class or instance.
    """

    loss_head: LabelHead | None = LabelHead()

    collator_class: ClassVar[type] = VideoCollator  # the collator this objective's batches come from

    def __init__(
        self,
        model: VideoModel | nn.Module,
        optim: OptimSettings | dict[str, Any] | None = None,
        max_skip_fraction: float = 0.1,
        aux: Mapping[str, AuxLoss] | None = None,
        targets: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimSettings) else OptimSettings(**(optim or {}))
        self.max_skip_fraction = max_skip_fraction
        self.skips = SkipTracker(max_skip_fraction)
        self.aux = nn.ModuleDict(bind_aux(aux, model, targets or {}))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ what a subclass writes
    @abstractmethod
    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """(scalar loss, extra metrics to log under ``<stage>/``) for one non-empty batch."""

    @classmethod
    def check_recipe(cls, stage: Mapping[str, Any], recipe: str, prefix: str) -> None:
        """Validate this objective's view of a (merged) recipe stage before anything is built; raise
        ``RecipeError`` naming the key. The default checks each auxiliary loss against the collator."""
        from vidtempo.config.errors import RecipeError
        from vidtempo.config.instantiate import resolve_target

        collator = (stage.get("data") or {}).get("collator") or {}
        for name, node in ((stage.get("objective") or {}).get("aux") or {}).items():
            key = f"{prefix}objective.aux.{name}"
            if not isinstance(node, Mapping) or "_target_" not in node:
                raise RecipeError("expected a mapping with _target_ (an aux_loss alias or a dotted path)",
                                  recipe=recipe, key=key)  # fmt: skip
            loss_class = resolve_target(node, key, recipe)
            check = getattr(loss_class, "check_collator", None)
            problem = check(node, collator) if check is not None else None
            if problem:
                raise RecipeError(problem, recipe=recipe, key=key)

    def checkpoint_state(self) -> dict[str, Any]:
        """Extra state a subclass keeps in Lightning checkpoints (read back by :meth:`load_checkpoint_state`)."""
        return {}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Counterpart of :meth:`checkpoint_state` on resume."""

    def trained_modules(self) -> dict[str, nn.Module]:
        """Modules besides the model that the optimiser trains (default: the auxiliary losses)."""
        return dict(self.aux.items())

    def head_kwargs(self) -> dict[str, Any]:
        """``{"loss_head": ...}`` for ``model.forward`` when a label head is set and the model takes one."""
        if self.loss_head is None or not accepts_loss_head(self.model):
            return {}
        return {"loss_head": self.loss_head}

    # ------------------------------------------------------------------ auxiliary losses
    @property
    def needs_hidden(self) -> bool:
        """Whether some auxiliary loss reads the LLM's hidden states (forward with ``return_hidden``)."""
        return any("hidden_states" in loss.requires for loss in self.aux.values())

    def add_aux(self, loss: torch.Tensor, out: VideoModelOutput, batch: Any, stage: str) -> torch.Tensor:
        """``loss`` plus every auxiliary loss (weighted, in recipe order), each logged as ``<stage>/<name>_loss``."""
        for name, aux in self.aux.items():
            value = aux(out, batch)
            self.log(f"{stage}/{name}_loss", value, batch_size=len(batch), sync_dist=stage != "train")
            loss = loss + aux.weight * value
        return loss

    # ------------------------------------------------------------------ the shared step
    def _step(self, batch: Any, stage: str) -> torch.Tensor | None:
        self.skips.update(batch, stage)
        if len(batch) == 0:
            return None  # every sample of this batch failed to decode (already counted)
        loss, metrics = self.compute_loss(batch, stage)
        n, sync = len(batch), stage != "train"
        if metrics:
            self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=n, sync_dist=sync)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n, sync_dist=sync)
        if stage == "train":
            self.log("train/skipped", float(self.skips.skipped), batch_size=n)
            self._log_data_counts(batch, n)
        return loss

    def _log_data_counts(self, batch: Any, n: int) -> None:
        """Per step: rows whose video has no audio track in an audio recipe, and rows whose annotated times
        run past their video (``VideoTextBatch.no_audio`` / ``past_end``; a preference batch: its chosen side)."""
        side = getattr(batch, "chosen", batch)
        if getattr(side, "audio", None) is not None:
            self.log("train/no_audio", float(getattr(side, "no_audio", 0)), batch_size=n)
        if getattr(side, "past_end", None):
            self.log("train/past_end", float(len(side.past_end)), batch_size=n)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    # ------------------------------------------------------------------ Lightning plumbing
    def configure_model(self) -> None:
        """FSDP2 on ``ModelParallelStrategy`` (CPU or GPU): each LLM block, then the model, then each trained
        module of the objective (``strategies.shard_objective``)."""
        from vidtempo.training.strategies import shard_for_strategy

        shard_for_strategy(self)

    def configure_optimizers(self) -> Any:
        return lightning_optimizers(self.model, self.optim, self.trainer, extra=self.trained_modules())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vidtempo_skips"] = self.skips.state_dict()
        checkpoint.update({f"vidtempo_{k}": v for k, v in self.checkpoint_state().items()})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skips.load_state_dict(checkpoint.get("vidtempo_skips", {}))
        self.load_checkpoint_state({k.removeprefix("vidtempo_"): v for k, v in checkpoint.items()
                                    if k.startswith("vidtempo_") and k != "vidtempo_skips"})  # fmt: skip


def accepts_loss_head(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``loss_head`` (``VideoLLM`` and the native Qwen2.5-VL do)."""
    import inspect

    try:
        return "loss_head" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
