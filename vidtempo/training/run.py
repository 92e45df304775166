"""Run a training recipe: validate, build, then train its stages in order inside one process.

Each stage writes ``<output_dir>/<i>_<name>/`` with Lightning checkpoints (``checkpoints/``, each written
atomically), logs, and on completion ``final/`` (Hugging Face style weights + resolved recipe + tokenizer, and
the auxiliary-loss heads, which the next stage starts from: ``head_io``), built under a temp name and swapped
in with a ``COMPLETE`` marker written last (``vidtempo.utils.atomic``). ``<output_dir>/manifest.json`` records
each stage's settings. Running the same command again skips finished stages (their ``final/`` weights are
loaded) and resumes the running stage from its newest intact checkpoint; a changed recipe is refused
(``manifest``). Ctrl-C finishes the current step, saves a checkpoint and says how to resume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from vidtempo.config.load import recipe_path, resolve_recipe, save_recipe, to_yaml
from vidtempo.data.overlong import length_settings
from vidtempo.models.build import build_video_llm, load_deferred
from vidtempo.models.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    is_llm_base,
    load_weights_into,
    save_pretrained,
    saves_adapter_only,
)
from vidtempo.models.interfaces import TrainableParts, VideoModel
from vidtempo.models.lora import LoraSettings
from vidtempo.models.weights import weights_dtype
from vidtempo.training.build import (
    build_datamodule,
    build_objective,
    build_tokenizer,
    expand_stages,
    fit_val_interval,
    model_node_for,
)
from vidtempo.training.checkpoints import newest_intact_checkpoint
from vidtempo.training.head_io import has_heads, head_state, load_heads, save_heads
from vidtempo.training.interrupt import GracefulInterrupt
from vidtempo.training.launch import is_first_process
from vidtempo.training.manifest import check_manifest, run_settings, write_manifest
from vidtempo.training.schema import validate_recipe
from vidtempo.training.strategies import full_state_dict
from vidtempo.training.trainer import build_trainer
from vidtempo.utils.atomic import atomic_dir, is_complete

log = logging.getLogger(__name__)

LEGACY_LAST_FILE = "recipe.yaml"  # the file an older vidtempo wrote last into final/ (before COMPLETE markers)


def prepare(cfg: DictConfig) -> tuple[dict[str, Any], str]:
    """Resolve and validate a loaded recipe; returns (plain dict, recipe path)."""
    from omegaconf import OmegaConf

    recipe = recipe_path(cfg)
    plain = OmegaConf.to_container(resolve_recipe(cfg), resolve=True)
    assert isinstance(plain, dict)
    validate_recipe(plain, recipe)
    return plain, recipe


def stage_dirs(plain: dict[str, Any]) -> list[Path]:
    out = Path(plain.get("output_dir") or f"runs/{plain.get('name', 'run')}")
    return [out / f"{i}_{stage['name']}" for i, stage in enumerate(expand_stages(plain))]


class RunInterrupted(Exception):
    """Ctrl-C stopped a stage after a step; its checkpoint is saved and the same command resumes it."""


def train(cfg: DictConfig, allow_changed_recipe: bool = False) -> Path:
    """Train every stage of ``cfg``; returns the final checkpoint directory of the last stage.

    Re-running continues the run: finished stages (``final/`` complete) are loaded, the running one resumes
    from its newest intact checkpoint. A recipe whose settings differ from those a started stage was trained
    with is refused (``manifest``) unless ``allow_changed_recipe``."""
    plain, recipe = prepare(cfg)
    callers_group = group_running()  # a process group the caller made outlives this run; Lightning's does not
    if (plain.get("dpo") or plain.get("curriculum")) and not plain.get("stages"):
        log.warning("%s has dpo/curriculum sections that `train` does not expand: use `vidtempo dpo`", recipe)
    stages, dirs = expand_stages(plain), stage_dirs(plain)
    out = Path(plain.get("output_dir") or f"runs/{plain.get('name', 'run')}")
    settings = run_settings(plain, stages)
    started = {st["name"]: stage_started(d) for st, d in zip(stages, dirs)}
    changes = check_manifest(out, settings, started, allow_changed_recipe, recipe)
    seed = int(plain.get("seed", 0))
    L.seed_everything(seed, workers=True)
    if is_first_process():  # the other ranks (started at the same time: training.launch) only read them
        save_recipe(cfg, out)
        write_manifest(out, settings, changes)
    tokenizer = build_tokenizer(plain, recipe)
    plain["model"] = model_node_for(plain["model"], tokenizer, recipe)  # + the rows of time tokens
    defer = shards_first(stages, dirs) and not plain.get("init_from")  # FSDP2: each rank loads only its shard
    model = build_video_llm(plain["model"], weights=plain.get("weights"), recipe=recipe, dtype=load_dtype(stages),
                            defer=defer)  # fmt: skip
    if plain.get("init_from"):
        init_weights(model, plain["init_from"], recipe)
    final = out
    # each stage's length budget for data.overlong, from the model while it is whole (not yet sharded)
    budgets = [length_settings(stage["data"], model) for stage in stages]
    # the auxiliary-loss heads of the last stage that had them: its final/ or, just trained, in memory
    heads: Path | dict[str, Any] | None = None
    for i, (stage, sdir) in enumerate(zip(stages, dirs)):
        if i:  # each later stage starts from its own seed: a resumed run draws what an uninterrupted one drew
            L.seed_everything(seed + i, workers=True)
        if stage.get("lora"):
            model.lora = _stage_lora(model, stage["lora"], f"stages.{i}.lora" if plain.get("stages") else "lora")
        plan = TrainableParts(**stage["trainable"])
        model.set_trainable(plan)
        if model.trains_base(plan):  # this stage trains (or trained) base weights: later saves are full
            model.base_modified = True
        if getattr(model, "new_token_ids", None) and not stage["trainable"].get("llm"):
            log.warning("stage %s freezes the LLM: the rows of the %d tokenizer.time_tokens stay at their start "
                        "(train them with trainable.llm: true or lora)", stage["name"], len(model.new_token_ids))
        final = sdir / "final"
        if not is_fsdp(stage):
            load_deferred(model)  # no sharding in this stage: the LLM loads whole (a no-op once loaded)
        if is_complete(final, legacy=LEGACY_LAST_FILE):
            log.info("stage %s already finished: loading %s", stage["name"], final)
            load_deferred(model)
            load_weights(model, final)
            heads = final if has_heads(final) else heads
        else:
            prefix = f"stages.{i}." if plain.get("stages") else ""
            data = _with_encoder_id({**stage, "data": _with_budget(stage["data"], budgets[i])}, model, recipe)
            heads = _train_stage({**stage, "data": data}, sdir, model, tokenizer, heads, cfg, plain, recipe, prefix,
                                 seed + i)  # fmt: skip
        if stage.get("merge_lora_after") and model.has_lora:
            model.merge_lora()  # the next stage starts a fresh adapter on the merged weights
    end_process_group(destroy=not callers_group)
    return final


def group_running() -> bool:
    """Whether a default process group exists (``torch.distributed`` initialised, by a caller or by Lightning)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def end_process_group(destroy: bool = True) -> None:
    """After the last stage of a multi-process run: every rank waits for the others, then the process group is
    torn down here, not by the interpreter's exit (a rank exiting with gloo's threads alive can abort with
    'terminate called without an active exception', exit code -6, which rank 0 now reports).

    ``destroy=False`` only waits: a group the caller created before ``train`` stays the caller's to end."""
    import torch.distributed as dist

    if group_running():
        dist.barrier()
        if destroy:
            dist.destroy_process_group()


def _stage_lora(model: VideoModel, settings: dict[str, Any], key: str) -> LoraSettings:
    """The settings of the adapter a stage creates. A model that already carries an adapter (from
    ``model.trainable`` or an earlier, unmerged stage) keeps it, so different settings would be ignored: refused."""
    wanted = LoraSettings(**settings)
    current = model.lora or LoraSettings()
    if model.has_lora and wanted != current:
        raise ValueError(f"{key}: the model already has a LoRA adapter ({current}), so these settings would be "
                         "ignored; set them under model.lora, or merge the earlier adapter (merge_lora_after)")
    return wanted


def is_fsdp(stage: dict[str, Any]) -> bool:
    """Whether a stage trains under FSDP2 (``trainer.strategy: fsdp``)."""
    return str((stage.get("trainer") or {}).get("strategy")) in ("fsdp", "fsdp2")


def shards_first(stages: list[dict[str, Any]], dirs: list[Path]) -> bool:
    """Whether the first stage that still has to train runs under FSDP2 and no finished stage comes before it:
    then the pretrained LLM is built on the meta device and loaded after sharding, per rank."""
    return bool(stages) and is_fsdp(stages[0]) and not is_complete(dirs[0] / "final", legacy=LEGACY_LAST_FILE)


def load_dtype(stages: list[dict[str, Any]]) -> torch.dtype:
    """The dtype pretrained weights load in: the half dtype when every stage trains in it (``bf16-true``), else
    fp32 (mixed precision keeps fp32 parameters)."""
    dtypes = {weights_dtype((stage.get("trainer") or {}).get("precision")) for stage in stages}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def stage_started(stage_dir: Path) -> bool:
    """Whether a stage has trained (a checkpoint or a final/ exists)."""
    return (stage_dir / "final").is_dir() or any((stage_dir / "checkpoints").glob("*.ckpt"))


def _train_stage(stage: dict[str, Any], sdir: Path, model: VideoModel, tokenizer: Any,
                 heads: Path | dict[str, Any] | None, cfg: DictConfig, plain: dict[str, Any], recipe: str,
                 prefix: str, seed: int) -> Path | dict[str, Any] | None:  # fmt: skip
    """Fit one stage (resuming from its newest intact checkpoint) and write its final/ atomically; returns the
    heads to hand to the next stage."""
    module = build_objective(stage, model, recipe, prefix)
    if heads is not None and (kept := load_heads(module, heads)):
        log.info("stage %s starts its %s head(s) from an earlier stage", stage["name"], " and ".join(kept))
    datamodule = build_datamodule(stage["data"], tokenizer, recipe,
                                  prefix=f"{prefix}data", collator_class=getattr(module, "collator_class", None),
                                  seed=int(plain.get("seed") or 0))  # fmt: skip
    stage = fit_val_interval(stage, datamodule)
    trainer = build_trainer(stage, sdir, recipe_yaml=to_yaml(cfg), seed=seed)
    resume = newest_intact_checkpoint(sdir / "checkpoints")
    if resume is not None:
        log.info("stage %s resumes from %s", stage["name"], resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    interrupt = next((c for c in trainer.callbacks if isinstance(c, GracefulInterrupt)), None)
    if interrupt is not None and interrupt.requested:
        raise RunInterrupted(f"interrupted at step {trainer.global_step} of stage {stage['name']}; checkpoint "
                             f"saved in {sdir / 'checkpoints'}. Re-run the same command to resume")  # fmt: skip
    module.skips.check_final()  # a run whose data mostly failed to decode must not produce a final/
    adapter_only = saves_adapter_only(model)  # then the frozen base LLM is never gathered
    state = full_state_dict(model, keep=(lambda k: not is_llm_base(k)) if adapter_only else None)  # collective
    trained = head_state(module)
    if trainer.is_global_zero:
        info = {"stage": stage["name"], "global_step": trainer.global_step}
        with atomic_dir(sdir / "final", info=info) as tmp:
            save_pretrained(model, tmp, model_config=plain["model"], tokenizer=tokenizer, state_dict=state,
                            adapter_only=adapter_only,
                            extra={"stage": stage["name"], "recipe": recipe})  # fmt: skip
            save_heads(module, tmp, trained)
            save_recipe(cfg, tmp)
    return trained or heads  # a stage without heads (e.g. DPO) passes the earlier ones on


def _with_budget(data: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """The data section with the model's length budget in the collator settings (``data.overlong``)."""
    return {**data, "collator": {**(data.get("collator") or {}), **budget}}


def _with_encoder_id(stage: dict[str, Any], model: VideoModel, recipe: str) -> dict[str, Any]:
    """The stage's data section with, when it reads cached features, the frozen encoder's identity."""
    from vidtempo.config.errors import RecipeError
    from vidtempo.data.feature_cache import encoder_fingerprint

    data = dict(stage["data"])
    collator = dict(data.get("collator") or {})
    if not collator.get("feature_cache"):
        return data
    if stage["trainable"].get("vision_encoder"):
        raise RecipeError("cached features need a frozen vision encoder in this stage", recipe=recipe,
                          key="data.collator.feature_cache")  # fmt: skip
    if "cached_features" not in model.capabilities:
        raise RecipeError(f"{type(model).__name__} encodes pixels only (no capability 'cached_features')",
                          recipe=recipe, key="data.collator.feature_cache")  # fmt: skip
    collator["encoder_id"] = encoder_fingerprint(model.vision_encoder)
    data["collator"] = collator
    return data


def init_weights(model: VideoModel, directory: str | Path, recipe: str) -> None:
    """``init_from``: start from the weights of a finished run (its ``final/`` directory)."""
    from vidtempo.config.errors import RecipeError

    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise RecipeError(f"{directory} is not a vidtempo checkpoint directory (expected {CONFIG_NAME} and "
                          f"{WEIGHTS_NAME}, e.g. runs/NAME/0_sft/final)", recipe=recipe, key="init_from")  # fmt: skip
    try:
        load_weights(model, directory)
    except (ValueError, RuntimeError) as err:
        raise RecipeError(f"{directory}: {err}", recipe=recipe, key="init_from") from err
    log.info("initialised the model from %s", directory)


def load_weights(model: VideoModel, directory: Path) -> None:
    """Load a ``final/`` directory's tensors into an already-built model (stage hand-over)."""
    _, unexpected = load_weights_into(model, directory)
    if unexpected:
        raise ValueError(f"{directory}: weights do not fit the model: unexpected {unexpected[:5]}")
