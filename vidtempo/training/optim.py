"""Optimiser and schedule from recipe settings: AdamW with per-part learning rates, warmup + cosine.

Example:
    >>> import torch
    >>> settings = OptimSettings(lr=1e-3, warmup_steps=2)
    >>> opt, sched = build_optimizer(torch.nn.Linear(2, 2), settings, total_steps=10)
    >>> [round(g["lr"], 6) for g in opt.param_groups]
    [0.0005, 0.0005]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adamw", "sgd")  # optim.name: the one list the recipe check and the builder read
SCHEDULERS = ("cosine", "linear", "constant", "wsd")  # optim.scheduler
ANNEAL_BY = ("steps", "time")  # optim.anneal_by


@dataclass
class OptimSettings:
    """Recipe ``optim`` section.

    Attributes:
        name: ``adamw`` (default) or ``sgd`` (momentum 0.9; exact comparisons across process counts).
        lr: base learning rate.
        weight_decay: applied to >= 2-D weights only (norms and biases are not decayed).
        betas: AdamW betas.
        warmup_steps: linear warmup steps (``warmup_ratio`` wins when > 0).
        warmup_ratio: warmup as a fraction of total steps (TDC/LLaVA use 0.03).
        scheduler: ``cosine``, ``linear`` or ``constant`` after warmup, or ``wsd`` (warmup-stable-decay: the
            peak lr until the last ``decay_fraction`` of the run, then a linear decay to the floor; MiniCPM,
            arXiv 2404.06395, and Hagele et al., arXiv 2405.18392).
        decay_fraction: the part of the run (steps or time, per ``anneal_by``) that ``wsd`` spends decaying.
        min_lr_ratio: floor of the decay as a fraction of ``lr``.
        lr_multipliers: per top-level part, e.g. ``{compressor: 10.0}``, or per dotted prefix of parameter names,
            e.g. ``{compressor.qformer: 10.0}`` (the longest matching prefix wins; its parameters form a group of
            their own).
        grad_clip: gradient norm clip (0 = off); passed to the Trainer.
        anneal_by: ``steps`` (default): the decay runs over the run's total steps. ``time``: it runs over
            whichever budget is spent first, steps or the trainer's ``max_time``, so a time-boxed run (the
            demo) reaches the end of its decay at the time limit however many steps the machine manages.
        fused: AdamW's fused implementation (one kernel over all parameters, on CPU or CUDA; the same update up
            to rounding): on the demo's 2-core CPU step it saves about 5 % of the step. Off by default; the
            fused kernel needs every parameter of a group on one device type with a floating dtype.
    """

    name: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    scheduler: str = "cosine"
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.0
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    grad_clip: float = 1.0
    anneal_by: str = "steps"
    fused: bool = False


def param_groups(
    model: nn.Module, settings: OptimSettings, extra: dict[str, nn.Module] | None = None
) -> list[dict[str, Any]]:
    """Trainable parameters grouped by (part, decay); ``extra`` adds objective-owned modules (e.g. an
    auxiliary head) as parts of their own name. A part is the top-level name, or the longest dotted prefix
    in ``settings.lr_multipliers`` that the parameter's name starts with.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> groups = param_groups(model, OptimSettings(lr=1.0, lr_multipliers={"1.bias": 10.0}))
        >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
        [('0.no_decay', 1.0, 2), ('1.no_decay', 1.0, 1), ('1.bias.no_decay', 10.0, 1)]
    """
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    named = list(model.named_parameters())
    for prefix, module in (extra or {}).items():
        named += [(f"{prefix}.{n}", p) for n, p in module.named_parameters()]
    prefixes = sorted((k for k in settings.lr_multipliers if "." in k), key=len, reverse=True)
    for name, param in named:
        if not param.requires_grad:
            continue
        part = next((p for p in prefixes if name == p or name.startswith(p + ".")), name.split(".", 1)[0])
        decay = param.ndim >= 2 and settings.weight_decay > 0
        groups.setdefault((part, decay), []).append(param)
    unknown = set(settings.lr_multipliers) - {part for part, _ in groups}
    if unknown:
        raise ValueError(f"optim.lr_multipliers names parts with no trainable parameters: {sorted(unknown)}")
    return [
        {
            "params": params,
            "lr": settings.lr * settings.lr_multipliers.get(part, 1.0),
            "weight_decay": settings.weight_decay if decay else 0.0,
            "name": f"{part}{'' if decay else '.no_decay'}",
        }
        for (part, decay), params in sorted(groups.items())
    ]


def lr_lambda(settings: OptimSettings, total_steps: int, time_used: Callable[[], float] | None = None) -> Any:
    """Multiplier of the base lr at a step: linear warmup then cosine/linear/constant/wsd.

    ``time_used`` (``anneal_by: time``) returns the fraction of the time budget spent; the decay then follows
    whichever of steps and time is further along.

    Example:
        >>> fn = lr_lambda(OptimSettings(min_lr_ratio=0.0), total_steps=100, time_used=lambda: 0.5)
        >>> round(fn(10), 3), round(lr_lambda(OptimSettings(), 100)(10), 3)  # half the time gone at step 10
        (0.5, 0.976)
        >>> wsd = lr_lambda(OptimSettings(scheduler="wsd", decay_fraction=0.2), total_steps=100)
        >>> [round(wsd(s), 2) for s in (0, 79, 80, 90, 100)]  # flat, then linear over the last 20 steps
        [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    if not 0.0 < settings.decay_fraction <= 1.0:
        raise ValueError(f"optim.decay_fraction must be in (0, 1], got {settings.decay_fraction}")
    warmup = int(settings.warmup_ratio * total_steps) if settings.warmup_ratio > 0 else settings.warmup_steps
    floor = settings.min_lr_ratio

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if time_used is not None:
            progress = max(progress, min(1.0, time_used()))
        if settings.scheduler == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if settings.scheduler == "linear":
            return floor + (1 - floor) * (1 - progress)
        if settings.scheduler == "constant":
            return 1.0
        if settings.scheduler == "wsd":
            decayed = (progress - (1 - settings.decay_fraction)) / settings.decay_fraction
            return floor + (1 - floor) * (1 - max(0.0, decayed))
        raise ValueError(f"optim.scheduler must be one of {', '.join(SCHEDULERS)}, got '{settings.scheduler}'")

    return fn


def build_optimizer(
    model: nn.Module,
    settings: OptimSettings,
    total_steps: int,
    extra: dict[str, nn.Module] | None = None,
    time_used: Callable[[], float] | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups = param_groups(model, settings, extra)
    if not groups:
        raise ValueError("no trainable parameters: check the recipe's model.trainable plan")
    if settings.name == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            groups, lr=settings.lr, betas=tuple(settings.betas), fused=True if settings.fused else None
        )
    elif settings.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=0.9)
    else:
        raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got '{settings.name}'")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(settings, total_steps, time_used))


def time_budget_used(trainer: Any) -> Callable[[], float]:
    """Fraction of the trainer's ``max_time`` spent in training so far (Lightning's ``Timer``, which counts the
    time before a resume too). With several processes every rank gets rank 0's fraction (one broadcast per
    call; every rank steps its scheduler at the same steps), so all ranks train with the same lr.

    Raises:
        ValueError: the trainer has no ``max_time``.
    """
    from lightning.pytorch.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is None:
        raise ValueError("optim.anneal_by: time needs trainer.max_time (the time budget the decay runs over)")

    def used() -> float:
        elapsed = timer.time_elapsed("train")
        fraction = elapsed / max(1e-9, elapsed + (timer.time_remaining("train") or 0.0))
        if int(getattr(trainer, "world_size", 1)) > 1:  # ranks' clocks differ: rank 0's decides
            fraction = float(trainer.strategy.broadcast(fraction, src=0))
        return fraction

    return used


def lightning_optimizers(
    model: nn.Module, settings: OptimSettings, trainer: Any, extra: dict[str, nn.Module] | None = None
) -> dict[str, Any]:
    """``configure_optimizers`` return value shared by every objective: per-step schedule over the run."""
    total = max(1, int(trainer.estimated_stepping_batches))
    if settings.anneal_by not in ANNEAL_BY:
        raise ValueError(f"optim.anneal_by must be {' or '.join(ANNEAL_BY)}, got '{settings.anneal_by}'")
    clock = time_budget_used(trainer) if settings.anneal_by == "time" else None
    optimizer, scheduler = build_optimizer(model, settings, total, extra, clock)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
