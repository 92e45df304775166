"""Recipe -> (tokenizer, datamodule, objective); the trainer: ``vidtempo.training.trainer``. The only place
that wires recipe sections.

Example:
    >>> from omegaconf import OmegaConf
    >>> stages = expand_stages({"optim": {"lr": 1.0}, "stages": [{"name": "a", "optim": {"lr": 2.0}}]})
    >>> stages[0]["optim"]["lr"], stages[0]["name"]
    (2.0, 'a')
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from vidtempo.config.errors import RecipeError
from vidtempo.config.instantiate import instantiate, resolve_target
from vidtempo.data.collate import VideoCollator
from vidtempo.data.grouping import VideoGroupedBatchSampler, clip_keys
from vidtempo.data.length_grouping import LengthGroupedBatchSampler, padding_fraction
from vidtempo.data.packing import PackingCollator, TokenBudgetBatchSampler, describe, sample_lengths
from vidtempo.data.resumable import EpochRandomSampler, ResumableDataLoader
from vidtempo.models.interfaces import VideoModel
from vidtempo.training.auxiliary.base import AuxLossError

log = logging.getLogger(__name__)


class VideoDataModule(L.LightningDataModule):
    """Train/val datasets of samples + the collator that decodes them in the workers.

    The module shards its own loaders over data-parallel ranks (``build_trainer`` turns Lightning's sampler
    injection off): Lightning cannot re-wrap the grouped batch sampler of ``group_by_video`` and would stop
    with a TypeError under DDP/FSDP.
    """

    def __init__(
        self,
        train: Dataset,
        collator: VideoCollator,
        val: Dataset | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        shuffle: bool = True,
        group_by_video: int = 0,
        seed: int = 0,
        packing: int | None = None,
        group_by_length: int = 0,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set, self.collator = train, val, collator
        self.batch_size, self.num_workers, self.shuffle = batch_size, num_workers, shuffle
        self.group_by_video, self.seed = int(group_by_video or 0), seed
        self.packing = packing  # data.packing.max_tokens: token-budget batches of packed rows
        self.group_by_length = int(group_by_length or 0)  # data.group_by_length: windows of W global batches
        self._lengths: list[int] | None = None
        if packing is not None:
            self.collator = PackingCollator(collator, packing)

    def _ranks(self) -> tuple[int, int]:
        """(world size, this rank): (1, 0) outside a distributed trainer."""
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "world_size", 1) or 1), int(getattr(trainer, "global_rank", 0) or 0)

    def _sampler(self, dataset: Dataset, shuffle: bool) -> Sampler | None:
        world, rank = self._ranks()
        if world > 1:  # what Lightning would inject: the recipe's seed, reshuffled by set_epoch
            return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        # an order that depends on (seed, epoch) only, so a resumed epoch can skip what it trained
        return EpochRandomSampler(len(dataset), self.seed) if shuffle else None  # type: ignore[arg-type]

    def _pin(self) -> bool:
        """Page-locked batches (asynchronous copies) when this rank trains on a CUDA device."""
        trainer = getattr(self, "trainer", None)
        strategy = getattr(trainer, "strategy", None)
        return strategy is not None and strategy.root_device.type == "cuda"

    def _loader(self, dataset: Dataset, loader_class: type[DataLoader], **batching: Any) -> DataLoader:
        return loader_class(dataset, num_workers=self.num_workers, collate_fn=self.collator,
                            persistent_workers=self.num_workers > 0, pin_memory=self._pin(), **batching)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        """Resumable: a run restarted from a mid-epoch checkpoint skips the batches that epoch already trained
        (``ResumableDataLoader``), without decoding them."""
        if self.packing is not None:
            return self._loader(self.train_set, ResumableDataLoader, batch_sampler=self._budget_sampler())
        if self.group_by_length > 0:
            return self._loader(self.train_set, ResumableDataLoader, batch_sampler=self._length_sampler())
        if self.group_by_video <= 1:
            sampler = self._sampler(self.train_set, self.shuffle)
            return self._loader(self.train_set, ResumableDataLoader, batch_size=self.batch_size, sampler=sampler)
        world, rank = self._ranks()
        grouped = VideoGroupedBatchSampler(clip_keys(self.train_set), self.batch_size, self.group_by_video,
                                           shuffle=self.shuffle, seed=self.seed, num_replicas=world, rank=rank)  # fmt: skip
        return self._loader(self.train_set, ResumableDataLoader, batch_sampler=grouped)

    def _train_lengths(self, collator: VideoCollator, key: str) -> list[int]:
        """LLM tokens of every training item, measured once (tokenising every item); an over-long item under
        ``data.overlong: error`` stops here, naming its record."""
        if self._lengths is None:
            self._lengths = sample_lengths(self.train_set, collator, key=key)
        return self._lengths

    def _length_sampler(self) -> LengthGroupedBatchSampler:
        """Fixed-size batches of similar lengths (``data.group_by_length``)."""
        world, rank = self._ranks()
        lengths = self._train_lengths(self.collator, "data.group_by_length")
        sampler = LengthGroupedBatchSampler(lengths, self.batch_size, self.group_by_length, shuffle=self.shuffle,
                                            seed=self.seed, num_replicas=world, rank=rank)  # fmt: skip
        order = [int(i) for i in np.random.default_rng(self.seed).permutation(len(lengths))]
        drawn = [order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        log.info("data.group_by_length=%d: %d items, padding %.1f%% of the LLM positions (%.1f%% in shuffled "
                 "batches)", self.group_by_length, len(lengths),
                 100 * padding_fraction(lengths, sampler._all_batches()), 100 * padding_fraction(lengths, drawn))  # fmt: skip
        return sampler

    def _budget_sampler(self) -> TokenBudgetBatchSampler:
        """Token-budget batches (``data.packing``); the lengths are measured once (tokenising every item)."""
        world, rank = self._ranks()
        lengths = self._train_lengths(self.collator.collator, "data.packing")
        sampler = TokenBudgetBatchSampler(lengths, int(self.packing or 0), shuffle=self.shuffle, seed=self.seed,
                                          num_replicas=world, rank=rank)  # fmt: skip
        log.info(describe(lengths, sampler._all_batches(), int(self.packing or 0)))
        return sampler

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, DataLoader, batch_size=self.batch_size,
                            sampler=self._sampler(self.val_set, False))  # fmt: skip


def expand_stages(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One merged settings dict per stage (a recipe without ``stages`` has a single stage ``sft``)."""
    base = {
        "name": _stage_name(cfg.get("objective") or {}),
        "trainable": (cfg.get("model") or {}).get("trainable") or {},
        "optim": cfg.get("optim") or {},
        "data": cfg.get("data") or {},
        "trainer": cfg.get("trainer") or {},
        "objective": cfg.get("objective") or {"_target_": "sft"},
        "checkpoint": cfg.get("checkpoint") or {},
    }
    stages = cfg.get("stages") or [{}]
    out = []
    for i, stage in enumerate(stages):
        merged = copy.deepcopy(base)
        merged["name"] = stage.get("name") or (base["name"] if len(stages) == 1 else f"stage{i}")
        for key in ("trainable", "optim", "trainer", "checkpoint"):
            merged[key] = {**merged[key], **(stage.get(key) or {})}
        if stage.get("data"):
            merged["data"] = {**merged["data"], **stage["data"]}
        if stage.get("objective"):
            merged["objective"] = stage["objective"]
        merged["merge_lora_after"] = bool(stage.get("merge_lora_after", False))
        merged["lora"] = stage.get("lora")  # settings for an adapter this stage creates (None = model.lora)
        out.append(merged)
    return out


def _stage_name(objective: dict[str, Any]) -> str:
    """A single stage's default name: the objective's alias, or the class name of a dotted path."""
    target = str(objective.get("_target_", "train"))
    return target.replace(":", ".").rsplit(".", 1)[-1]


def build_tokenizer(cfg: dict[str, Any], recipe: str) -> Any:
    node = cfg.get("tokenizer") or {"_target_": "tiny"}
    return instantiate(node, key="tokenizer", recipe=recipe)


def model_node_for(model: dict[str, Any], tokenizer: Any, recipe: str) -> dict[str, Any]:
    """The model node with ``new_token_ids``: the tokenizer's time tokens (``tokenizer.time_tokens``), whose rows
    the model adds to its LLM at build (``VideoLLM``); unchanged for a tokenizer without them.

    Raises:
        RecipeError: the model class cannot add token rows (e.g. the native Qwen2.5-VL).
    """
    import inspect

    from vidtempo.models.tokenizers import time_token_ids

    ids = time_token_ids(tokenizer)
    if not ids:
        return model
    target = resolve_target(model, "model", recipe)
    if "new_token_ids" not in inspect.signature(target).parameters:
        raise RecipeError(f"{getattr(target, '__name__', target)} cannot add embedding rows for the "
                          f"{len(ids)} time tokens; use a VideoLLM model or drop time_tokens",
                          recipe=recipe, key="tokenizer.time_tokens")  # fmt: skip
    return {**model, "new_token_ids": ids}


def build_datamodule(
    data: dict[str, Any], tokenizer: Any, recipe: str, prefix: str = "data", collator_class: type | None = None,
    seed: int = 0,
) -> VideoDataModule:
    """Datasets + collator. ``collator_class`` comes from the objective (``SFTModule.collator_class``).
    ``data.group_by_video: n`` (n > 1) draws training batches of up to n questions per clip
    (``VideoGroupedBatchSampler``) and lets the collator and the model handle each clip once."""
    train = instantiate(data["train"], key=f"{prefix}.train", recipe=recipe)
    val = instantiate(data["val"], key=f"{prefix}.val", recipe=recipe) if data.get("val") else None
    collator_node = dict(data.get("collator") or {})
    group = int(data.get("group_by_video") or 0)
    packing = _packing_tokens(data, collator_node, collator_class, group, recipe, prefix)
    by_length = _length_window(data, collator_class, group, packing, recipe, prefix)
    if group > 1:
        if collator_class not in (None, VideoCollator):
            raise RecipeError(f"group_by_video needs the SFT video collator, not {collator_class.__name__}",
                              recipe=recipe, key=f"{prefix}.group_by_video")  # fmt: skip
        collator_node["share_clips"] = True  # each clip of a batch is decoded, stacked and encoded once
    collator = (collator_class or VideoCollator)(tokenizer, **collator_node)
    return VideoDataModule(
        train, collator, val, batch_size=int(data.get("batch_size", 1)),
        num_workers=int(data.get("num_workers", 0)), shuffle=bool(data.get("shuffle", True)),
        group_by_video=group, seed=int(seed), packing=packing, group_by_length=by_length,
    )  # fmt: skip


def _length_window(data: dict[str, Any], collator_class: type | None, group: int, packing: int | None, recipe: str,
                   prefix: str) -> int:  # fmt: skip
    """``data.group_by_length`` (0 = off) after its checks: the SFT video collator (it measures every item's
    tokens), and neither ``group_by_video`` nor ``packing``, which draw batches their own way."""
    window = int(data.get("group_by_length") or 0)
    if window <= 0:
        return 0
    key = f"{prefix}.group_by_length"
    if collator_class not in (None, VideoCollator):
        raise RecipeError(f"group_by_length needs the SFT video collator, not {collator_class.__name__}",
                          recipe=recipe, key=key)  # fmt: skip
    if group > 1 or packing is not None:
        other = "group_by_video" if group > 1 else "packing"
        raise RecipeError(f"group_by_length cannot be combined with data.{other}: each draws the batches its own "
                          "way", recipe=recipe, key=key)  # fmt: skip
    return window


def _packing_tokens(data: dict[str, Any], collator: dict[str, Any], collator_class: type | None, group: int,
                    recipe: str, prefix: str) -> int | None:  # fmt: skip
    """``data.packing.max_tokens`` after the checks that need the built pieces (None without packing): the SFT
    video collator, no ``group_by_video``, and room for the longest sample ``data.overlong`` lets through
    (``model.max_length``, injected into the collator settings)."""
    node = data.get("packing")
    if not node:
        return None
    key = f"{prefix}.packing"
    if collator_class not in (None, VideoCollator):
        raise RecipeError(f"packing needs the SFT video collator, not {collator_class.__name__}", recipe=recipe,
                          key=key)  # fmt: skip
    if group > 1:
        raise RecipeError("packing fills batches by tokens; it cannot be combined with group_by_video", recipe=recipe,
                          key=key)  # fmt: skip
    tokens = int(node["max_tokens"])
    longest = collator.get("max_length")
    if longest is not None and tokens < int(longest):
        raise RecipeError(f"max_tokens={tokens} is below model.max_length={longest}: a sample data.overlong lets "
                          f"through (up to {longest} tokens) would not fit a packed row; raise max_tokens to at "
                          f"least {longest} or lower model.max_length", recipe=recipe, key=f"{key}.max_tokens")  # fmt: skip
    return tokens


def fit_val_interval(stage: dict[str, Any], datamodule: VideoDataModule) -> dict[str, Any]:
    """An int ``trainer.val_check_interval`` above one epoch's training batches (a copied tiny recipe on small
    data) becomes once per epoch, with a warning naming the key; Lightning refuses it otherwise. With
    ``check_val_every_n_epoch: null`` the interval counts steps across epochs, which Lightning accepts for any
    epoch length (and refuses a fraction for): it is kept."""
    trainer = dict(stage["trainer"])
    interval = trainer.get("val_check_interval")
    if isinstance(interval, bool) or not isinstance(interval, int) or datamodule.val_set is None:
        return stage
    if "check_val_every_n_epoch" in trainer and trainer["check_val_every_n_epoch"] is None:
        return stage  # every `interval` steps across epochs: valid whatever the epoch's length
    batches = len(datamodule.train_dataloader())
    if interval <= batches:
        return stage
    log.warning("trainer.val_check_interval=%d is more than the %d training batches of an epoch: validating "
                "once per epoch instead", interval, batches)  # fmt: skip
    return {**stage, "trainer": {**trainer, "val_check_interval": 1.0}}


def build_objective(stage: dict[str, Any], model: VideoModel, recipe: str, prefix: str) -> L.LightningModule:
    """The stage's objective around ``model``. The objective's own ``check_recipe`` ran at validation; a
    model that lacks a capability an auxiliary loss needs fails here, naming the loss."""
    import inspect

    data = stage.get("data") or {}
    if data.get("packing") and "packing" not in model.capabilities:
        raise RecipeError(f"{type(model).__name__} does not declare the 'packing' capability (forward(packing=N))",
                          recipe=recipe, key=f"{prefix}data.packing")  # fmt: skip
    node = stage["objective"]
    extra: dict[str, Any] = {}
    target_class = resolve_target(node, f"{prefix}objective", recipe)
    if "targets" in inspect.signature(target_class).parameters:
        extra["targets"] = target_channels(data.get("collator") or {}, recipe, prefix)
    try:
        return instantiate(
            node, key=f"{prefix}objective", recipe=recipe, model=model, optim=stage["optim"],
            max_skip_fraction=float(data.get("max_skip_fraction", 0.1)), **extra,
        )  # fmt: skip
    except AuxLossError as err:
        raise RecipeError(err.reason, recipe=recipe, key=f"{prefix}objective.aux.{err.name}") from err


def target_channels(collator: dict[str, Any], recipe: str, prefix: str) -> dict[str, int]:
    """{name: C} of the per-frame targets ``data.collator.targets`` makes (sizes auxiliary heads)."""
    out = {}
    for name, node in (collator.get("targets") or {}).items():
        builder = instantiate(node, key=f"{prefix}data.collator.targets.{name}", recipe=recipe)
        out[name] = int(builder.channels)
    return out
