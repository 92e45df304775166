"""Curriculum DPO and pre-SFT alignment as recipe stages (TEMPO / TEMPLE, ``docs/methods/tempo.md``).

A recipe describes its SFT part as usual (top-level sections, or ``stages``) plus two sections:

``dpo``: how one DPO stage runs, with the keys of a stage (``objective``, ``data``, ``trainable``, ``optim``,
``trainer``, ``checkpoint``). ``data.train`` is the preference dataset holding *every* level; each pair's
``meta["magnitude"]`` is its difficulty. ``trainable`` defaults to LoRA on the LLM only (TEMPLE: ViT,
aligner frozen).

``curriculum``:
    levels: [16, 8, 4, 2]      magnitudes (large = easy)
    order: easy_to_hard        or hard_to_easy, as_listed (a shuffled-difficulty ablation)
    switch: epochs             or steps: what per_level counts
    per_level: 1               int, or one value per level in run order
    merge_lora_after: true     merge each level's adapter before the next (=> reference refresh per level)
    pre_sft: false             true: DPO stages before the SFT stage(s) (TEMPLE); false: after (baseline)
    with_sft: true             false: DPO stages only
    name: dpo                  stage name prefix (stages are dpo_m16, dpo_m8, ...)
    magnitude_key: magnitude   the meta key holding a pair's difficulty

:func:`expand_curriculum` turns the recipe into a plain multi-stage recipe that
:func:`vidtempo.training.run.train` runs (and resumes) like any other. Each level's data is the preference
set wrapped in :class:`MagnitudeFilter`. Without ``curriculum=True`` it makes one DPO stage over all levels
with the same total compute (single-stage DPO baseline).

Example:
    >>> cfg = {"model": {}, "data": {"train": {}}, "dpo": {"data": {"train": {"_target_": "preference"}}},
    ...        "curriculum": {"switch": "steps", "per_level": 5, "pre_sft": True}}
    >>> [s["name"] for s in expand_curriculum(cfg)["stages"]]
    ['dpo_m16', 'dpo_m8', 'dpo_m4', 'dpo_m2', 'sft']
    >>> [s["name"] for s in expand_curriculum(cfg, curriculum=False, pre_sft=False)["stages"]]
    ['sft', 'dpo']
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from torch.utils.data import Dataset

from vidtempo.config.errors import RecipeError

DEFAULT_LEVELS: tuple[int, ...] = (16, 8, 4, 2)
ORDERS: tuple[str, ...] = ("easy_to_hard", "hard_to_easy", "as_listed")
SWITCHES: tuple[str, ...] = ("epochs", "steps")
DPO_KEYS = {"objective", "data", "trainable", "optim", "trainer", "checkpoint"}
# TEMPLE DPO: LoRA on the LLM, vision tower and aligner frozen (docs/methods/tempo.md)
DEFAULT_DPO_TRAINABLE: dict[str, Any] = {
    "vision_encoder": False, "audio_encoder": False, "compressor": False, "projector": False, "llm": "lora",
}  # fmt: skip


class MagnitudeFilter(Dataset):
    """The pairs of ``dataset`` whose ``meta[key]`` is one of ``magnitudes`` (one curriculum level).

    Args:
        dataset: a dataset of samples with a ``meta`` dict (``PreferenceSample``).
        magnitudes: the magnitudes to keep.
        key: the meta key holding a pair's magnitude.

    Raises:
        ValueError: a sample lacks ``meta[key]``, or no sample has one of ``magnitudes`` (names the magnitudes
            present).

    Example:
        >>> from vidtempo.data.samples import PreferenceSample
        >>> pairs = [PreferenceSample(None, [], "a", "b", meta={"magnitude": m}) for m in (16, 2, 16)]
        >>> len(MagnitudeFilter(pairs, [16]))
        2
    """

    def __init__(self, dataset: Any, magnitudes: Sequence[int] | int, key: str = "magnitude") -> None:
        self.dataset = dataset
        self.magnitudes = (
            [int(magnitudes)] if isinstance(magnitudes, (int, float)) else [int(m) for m in magnitudes]
        )
        self.key = key
        found: Counter[int] = Counter()
        self.indices: list[int] = []
        for i in range(len(dataset)):
            sample = dataset[i]
            meta = getattr(sample, "meta", None) or {}
            if key not in meta:
                raise ValueError(
                    f"{_describe(dataset)}: sample {i} ('{getattr(sample, 'id', '')}') has no meta '{key}'; "
                    "curriculum levels need each pair's perturbation magnitude (its difficulty)"
                )
            found[int(meta[key])] += 1
            if int(meta[key]) in self.magnitudes:
                self.indices.append(i)
        if not self.indices:
            raise ValueError(
                f"{_describe(dataset)}: no pair with {key} in {self.magnitudes}; magnitudes present: "
                f"{dict(sorted(found.items()))}"
            )
        self.counts = dict(sorted(found.items()))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]


def _describe(dataset: Any) -> str:
    path = getattr(dataset, "path", None) or getattr(dataset, "root", None)
    return f"{type(dataset).__name__}({path})" if path else type(dataset).__name__


@dataclass
class CurriculumSettings:
    """The recipe's ``curriculum`` section (see the module docstring)."""

    levels: list[int] = field(default_factory=lambda: list(DEFAULT_LEVELS))
    order: str = "easy_to_hard"
    switch: str = "epochs"
    per_level: int | list[int] = 1
    merge_lora_after: bool = True
    pre_sft: bool = False
    with_sft: bool = True
    name: str = "dpo"
    magnitude_key: str = "magnitude"

    @classmethod
    def from_section(cls, section: Any, recipe: str = "<recipe>") -> CurriculumSettings:
        """Validate a plain ``curriculum`` mapping; errors name the recipe and the key."""
        section = section or {}
        if not isinstance(section, dict):
            raise RecipeError(
                f"expected a mapping, got {type(section).__name__}", recipe=recipe, key="curriculum"
            )
        valid = {f.name for f in fields(cls)}
        for key in section:
            if key not in valid:
                raise RecipeError(f"unknown key; valid keys: {', '.join(sorted(valid))}", recipe=recipe,
                                  key=f"curriculum.{key}")  # fmt: skip
        settings = cls(**section)
        settings._check(recipe)
        return settings

    def _check(self, recipe: str) -> None:
        def bad(key: str, msg: str) -> RecipeError:
            return RecipeError(msg, recipe=recipe, key=f"curriculum.{key}")

        if (
            not isinstance(self.levels, list)
            or not self.levels
            or not all(isinstance(m, int) and m >= 1 for m in self.levels)
        ):
            raise bad(
                "levels",
                f"expected a non-empty list of magnitudes >= 1 (e.g. [16, 8, 4, 2]), got {self.levels!r}",
            )
        if len(set(self.levels)) != len(self.levels):
            raise bad("levels", f"magnitudes must be distinct, got {self.levels}")
        if self.order not in ORDERS:
            raise bad("order", f"expected one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.switch not in SWITCHES:
            raise bad("switch", f"expected one of {', '.join(SWITCHES)}, got {self.switch!r}")
        lengths = self.per_level if isinstance(self.per_level, list) else [self.per_level]
        if not all(isinstance(n, int) and n >= 1 for n in lengths):
            raise bad("per_level", f"expected an int >= 1 or a list of them, got {self.per_level!r}")
        if isinstance(self.per_level, list) and len(self.per_level) != len(self.levels):
            raise bad("per_level", f"{len(self.per_level)} values for {len(self.levels)} levels")

    def ordered_levels(self) -> list[int]:
        """Levels in run order (``easy_to_hard``: largest magnitude first)."""
        if self.order == "easy_to_hard":
            return sorted(self.levels, reverse=True)
        if self.order == "hard_to_easy":
            return sorted(self.levels)
        return list(self.levels)

    def lengths(self) -> list[int]:
        """Epochs or steps of each level, in run order."""
        if isinstance(self.per_level, list):
            return list(self.per_level)
        return [self.per_level] * len(self.levels)


def _filtered(node: Any, magnitudes: list[int], key: str) -> dict[str, Any]:
    return {"_target_": f"{__name__}.MagnitudeFilter", "dataset": copy.deepcopy(node),
            "magnitudes": magnitudes, "key": key}  # fmt: skip


def _dpo_stage(dpo: dict[str, Any], settings: CurriculumSettings, name: str, magnitudes: list[int],
               length: int, merge: bool) -> dict[str, Any]:  # fmt: skip
    data = dict(dpo.get("data") or {})
    data["train"] = _filtered(data["train"], magnitudes, settings.magnitude_key)
    val = data.get("val")
    data["val"] = _filtered(val, settings.ordered_levels(), settings.magnitude_key) if val else None
    trainer = dict(dpo.get("trainer") or {})
    if settings.switch == "steps":
        trainer.update(max_steps=length, max_epochs=-1)
    else:
        trainer.update(max_epochs=length, max_steps=-1)
    if not val:  # no preference validation set: never validate this stage (and never on the SFT data)
        trainer.update(limit_val_batches=0, val_check_interval=None, num_sanity_val_steps=0)
    return {
        "name": name,
        "objective": copy.deepcopy(dpo.get("objective") or {"_target_": "dpo"}),
        "data": data,
        "trainable": {**DEFAULT_DPO_TRAINABLE, **(dpo.get("trainable") or {})},
        "optim": copy.deepcopy(dpo.get("optim") or {}),
        "trainer": trainer,
        "checkpoint": copy.deepcopy(dpo.get("checkpoint") or {}),
        "merge_lora_after": merge,
    }


def dpo_stages(
    dpo: dict[str, Any], settings: CurriculumSettings, curriculum: bool = True
) -> list[dict[str, Any]]:
    """The DPO stage dicts: one per level (``curriculum``), or one over all levels with the same compute."""
    levels, lengths = settings.ordered_levels(), settings.lengths()
    if curriculum:
        return [_dpo_stage(dpo, settings, f"{settings.name}_m{m}", [m], n, settings.merge_lora_after)
                for m, n in zip(levels, lengths, strict=True)]  # fmt: skip
    if settings.switch == "steps":
        total = sum(lengths)
    elif len(set(lengths)) == 1:
        total = lengths[0]  # every level once per epoch: one epoch over all levels = one epoch per level
    else:
        raise ValueError("single-stage DPO with per-level epoch counts that differ: give one per_level value")
    return [_dpo_stage(dpo, settings, settings.name, levels, total, settings.merge_lora_after)]


def expand_curriculum(
    cfg: dict[str, Any], *, curriculum: bool = True, pre_sft: bool | None = None, recipe: str | None = None
) -> dict[str, Any]:
    """A copy of a (resolved, plain) recipe whose ``stages`` run SFT and DPO in the configured order.

    Args:
        cfg: the recipe with ``dpo`` and optional ``curriculum`` sections; its ``stages`` (or, without any,
            its top-level sections as one stage named ``sft``) are the SFT part.
        curriculum: one stage per level (True) or a single DPO stage over every level (False).
        pre_sft: DPO before SFT (True) or after (False); None = ``curriculum.pre_sft``.
        recipe: recipe path for error messages.

    Returns:
        The recipe without ``dpo`` / ``curriculum`` and with the expanded ``stages``.
    """
    recipe = recipe or str(cfg.get("_recipe_path_", "<recipe>"))
    dpo = cfg.get("dpo")
    if not isinstance(dpo, dict):
        raise RecipeError(
            "missing 'dpo' section (the DPO stage: objective, data.train, ...)", recipe=recipe, key="dpo"
        )
    for key in dpo:
        if key not in DPO_KEYS:
            raise RecipeError(f"unknown key; valid keys: {', '.join(sorted(DPO_KEYS))}", recipe=recipe,
                              key=f"dpo.{key}")  # fmt: skip
    if not isinstance(dpo.get("data"), dict) or not dpo["data"].get("train"):
        raise RecipeError(
            "missing the preference dataset (dpo.data.train)", recipe=recipe, key="dpo.data.train"
        )
    settings = CurriculumSettings.from_section(cfg.get("curriculum"), recipe)
    if pre_sft is not None:
        settings.pre_sft = pre_sft
    try:
        dpo_part = dpo_stages(dpo, settings, curriculum)
    except ValueError as err:
        raise RecipeError(str(err), recipe=recipe, key="curriculum.per_level") from err
    sft_part = copy.deepcopy(cfg.get("stages") or [{"name": "sft"}]) if settings.with_sft else []
    if sft_part and not settings.pre_sft:
        # baseline ordering: fold the SFT adapter (if any) into the weights so DPO's adapter-off reference
        # is the SFT model, not the model before SFT
        sft_part[-1]["merge_lora_after"] = True
    out = {k: copy.deepcopy(v) for k, v in cfg.items() if k not in ("dpo", "curriculum")}
    out["stages"] = dpo_part + sft_part if settings.pre_sft else sft_part + dpo_part
    return out


def describe_stages(cfg: dict[str, Any]) -> list[str]:
    """One line per stage of an expanded recipe: name, objective, magnitudes, length, merge."""
    lines = []
    for i, stage in enumerate(cfg.get("stages") or []):
        train = (stage.get("data") or {}).get("train") or {}
        mags = train.get("magnitudes") if isinstance(train, dict) else None
        trainer = {**(cfg.get("trainer") or {}), **(stage.get("trainer") or {})}
        steps, epochs = trainer.get("max_steps"), trainer.get("max_epochs")
        length = (
            f"{steps} steps"
            if steps not in (None, -1)
            else (f"{epochs} epochs" if epochs not in (None, -1) else "")
        )
        target = (stage.get("objective") or cfg.get("objective") or {"_target_": "sft"}).get("_target_")
        parts = [f"{i}_{stage.get('name', f'stage{i}')}", f"objective={target}"]
        if mags:
            parts.append(f"magnitudes={mags}")
        if length:
            parts.append(length)
        if stage.get("merge_lora_after"):
            parts.append("merge_lora_after")
        lines.append("  ".join(parts))
    return lines
