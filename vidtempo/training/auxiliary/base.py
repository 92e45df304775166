"""``AuxLoss``: an auxiliary training loss that an objective adds to its main loss, as a recipe plug-in.

A recipe lists them under ``objective.aux`` (registry kind ``aux_loss``, or any dotted path)::

    objective:
      _target_: sft
      aux:
        tag: {_target_: frame_tags, weight: 1.0, target: frame_tags}

Each loss declares the model **capabilities** it reads (``requires``, keys of
``vidtempo.models.interfaces.CAPABILITIES``) and the batch **targets** it reads (``target``: a name under
``data.collator.targets``, built by a ``vidtempo.data.targets.TargetBuilder``). Both are checked before any
training: a missing target when the recipe is validated, a missing capability when the objective is built,
each with an error naming ``objective.aux.<name>``.

Life cycle: built from the recipe (no weights yet) -> :meth:`AuxLoss.bind` by the objective (creates its heads,
sized from the model and the target) -> ``forward(out, batch)`` every step. Heads are trained with the model but
are not part of the exported model; they are saved beside it and handed to the next stage
(:meth:`AuxLoss.handover_module`, ``vidtempo.training.head_io``).

Example:
    >>> import torch
    >>> class MeanLogit(AuxLoss):
    ...     requires = frozenset({"hidden_states"})
    ...     def bind(self, model, target_channels):
    ...         self.head = torch.nn.Linear(model.hidden_size, 1)
    ...     def forward(self, out, batch):
    ...         return self.head(out.last_hidden_state).mean()
    >>> MeanLogit(weight=0.5).weight, MeanLogit.requires
    (0.5, frozenset({'hidden_states'}))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from vidtempo.models.interfaces import VideoModel, VideoModelOutput


class AuxLossError(ValueError):
    """An auxiliary loss that does not fit the model or the batch: names the loss (``objective.aux.<name>``)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason
        super().__init__(f"objective.aux.{name}: {reason}")


class AuxLoss(nn.Module, ABC):
    """Base class of auxiliary losses (see the module docstring).

    Args:
        weight: multiplies the loss before it is added to the objective's loss.
        target: the ``batch.targets`` entry it reads (None: it reads none; subclasses set a default).
    """

    requires: ClassVar[frozenset[str]] = frozenset()  # model capabilities it reads
    capability_hint: ClassVar[str] = ""  # appended to the error when the model lacks one of them
    default_target: ClassVar[str | None] = None

    def __init__(self, weight: float = 1.0, target: str | None = None) -> None:
        super().__init__()
        self.weight = float(weight)
        self.target = target if target is not None else self.default_target

    @property
    def targets(self) -> tuple[str, ...]:
        """The ``batch.targets`` names this loss reads."""
        return (self.target,) if self.target else ()

    @classmethod
    def check_collator(cls, node: Mapping[str, Any], collator: Mapping[str, Any]) -> str | None:
        """A problem with the recipe's ``data.collator`` for this loss (its ``node`` settings), or None.
        Called when the recipe is validated, before anything is built."""
        target = node.get("target", cls.default_target)
        if target and target not in (collator.get("targets") or {}):
            made = ", ".join(sorted(collator.get("targets") or {})) or "none"
            return (f"reads batch target '{target}', which no data.collator.targets entry makes "
                    f"(targets made: {made})")  # fmt: skip
        return None

    def bind(self, model: VideoModel, target_channels: Mapping[str, int]) -> None:
        """Create the heads, sized from ``model`` and the channel counts of the batch targets. Called once by
        the objective's constructor; the default has no heads."""

    @abstractmethod
    def forward(self, out: VideoModelOutput, batch: Any) -> torch.Tensor:
        """The (unweighted) scalar loss of one batch from the model output and the batch."""

    def handover_module(self) -> nn.Module:
        """The module whose state is saved with a stage's checkpoint and loaded by the next stage's loss of
        the same name (when names and shapes fit)."""
        return self

    def batch_target(self, batch: Any) -> torch.Tensor:
        """(B, T, C) ``batch.targets[self.target]``; a clear error when the batch lacks it."""
        targets = getattr(batch, "targets", None) or {}
        if self.target not in targets:
            raise ValueError(f"{type(self).__name__} needs batch.targets['{self.target}']: add it under "
                             "data.collator.targets")  # fmt: skip
        return targets[self.target]


def bind_aux(
    aux: Mapping[str, AuxLoss] | None, model: VideoModel, target_channels: Mapping[str, int]
) -> dict[str, AuxLoss]:
    """Check each loss's needs against the model and the batch targets, then bind it (heads created in the
    recipe's order, so the same recipe and seed give the same initial heads)."""
    out = {}
    for name, loss in (aux or {}).items():
        if not isinstance(loss, AuxLoss):
            raise AuxLossError(name, f"expected an AuxLoss (vidtempo.training.auxiliary), got {type(loss).__name__}")
        declared = getattr(model, "capabilities", frozenset())
        missing = sorted(set(loss.requires) - set(declared))
        if missing:
            raise AuxLossError(
                name, f"{type(loss).__name__} needs the model capability {', '.join(repr(m) for m in missing)}, "
                f"which {type(model).__name__} does not provide (it provides: {', '.join(sorted(declared)) or 'none'})"
                + (f"; {loss.capability_hint}" if loss.capability_hint else "")
            )
        for target in loss.targets:
            if target not in target_channels:
                raise AuxLossError(name, f"reads batch target '{target}'; add it under data.collator.targets")
        loss.bind(model, target_channels)
        out[name] = loss
    return out
