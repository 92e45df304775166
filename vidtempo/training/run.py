"""Run a training recipe: validate, build, then train its stages in order inside one process.

Each stage writes ``<output_dir>/<i>_<name>/`` with Lightning checkpoints (``checkpoints/last.ckpt``),
logs, and on completion ``final/`` (Hugging Face style weights + resolved recipe + tokenizer, and the
auxiliary-loss heads, which the next stage starts from: ``head_io``). Running
the same command again skips finished stages (their ``final/`` weights are loaded) and resumes the
running stage from its last checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from vidtempo.config.load import recipe_path, resolve_recipe, save_recipe, to_yaml
from vidtempo.models.build import build_video_llm
from vidtempo.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_weights_into, save_pretrained
from vidtempo.models.interfaces import TrainableParts, VideoModel
from vidtempo.models.lora import LoraSettings
from vidtempo.training.build import (
    build_datamodule,
    build_objective,
    build_tokenizer,
    build_trainer,
    expand_stages,
)
from vidtempo.training.head_io import has_heads, head_state, load_heads, save_heads
from vidtempo.training.schema import validate_recipe
from vidtempo.training.strategies import full_state_dict

log = logging.getLogger(__name__)


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


def train(cfg: DictConfig) -> Path:
    """Train every stage of ``cfg``; returns the final checkpoint directory of the last stage."""
    plain, recipe = prepare(cfg)
    if (plain.get("dpo") or plain.get("curriculum")) and not plain.get("stages"):
        log.warning("%s has dpo/curriculum sections that `train` does not expand: use `vidtempo dpo`", recipe)
    L.seed_everything(int(plain.get("seed", 0)), workers=True)
    out = Path(plain.get("output_dir") or f"runs/{plain.get('name', 'run')}")
    save_recipe(cfg, out)
    tokenizer = build_tokenizer(plain, recipe)
    model = build_video_llm(plain["model"], weights=plain.get("weights"), recipe=recipe)
    if plain.get("init_from"):
        init_weights(model, plain["init_from"], recipe)
    final = out
    # the auxiliary-loss heads of the last stage that had them: its final/ or, just trained, in memory
    heads: Path | dict[str, Any] | None = None
    for i, (stage, sdir) in enumerate(zip(expand_stages(plain), stage_dirs(plain))):
        if stage.get("lora"):
            model.lora = LoraSettings(**stage["lora"])  # used by the adapter this stage creates
        model.set_trainable(TrainableParts(**stage["trainable"]))
        final = sdir / "final"
        if (final / CONFIG_NAME).is_file():
            log.info("stage %s already finished: loading %s", stage["name"], final)
            load_weights(model, final)
            if stage.get("merge_lora_after") and model.has_lora:
                model.merge_lora()
            heads = final if has_heads(final) else heads
            continue
        prefix = f"stages.{i}." if plain.get("stages") else ""
        module = build_objective(stage, model, recipe, prefix)
        if heads is not None and (kept := load_heads(module, heads)):
            log.info("stage %s starts its %s head(s) from an earlier stage", stage["name"], " and ".join(kept))
        datamodule = build_datamodule(_with_encoder_id(stage, model, recipe), tokenizer, recipe,
                                      prefix=f"{prefix}data", collator_class=getattr(module, "collator_class", None),
                                      seed=int(plain.get("seed") or 0))
        trainer = build_trainer(stage, sdir, recipe_yaml=to_yaml(cfg))
        last = sdir / "checkpoints" / "last.ckpt"
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
        state = full_state_dict(model)  # collective when sharded: every rank takes part
        trained = head_state(module)
        if trainer.is_global_zero:
            save_pretrained(model, final, model_config=plain["model"], tokenizer=tokenizer, state_dict=state,
                            extra={"stage": stage["name"], "recipe": recipe})  # fmt: skip
            save_heads(module, final, trained)
            save_recipe(cfg, final)
        heads = trained or heads  # a stage without heads (e.g. DPO) passes the earlier ones on
        if stage.get("merge_lora_after") and model.has_lora:
            model.merge_lora()  # the next stage starts a fresh adapter on the merged weights
    return final


def _with_encoder_id(stage: dict[str, Any], model: VideoModel, recipe: str) -> dict[str, Any]:
    """Inject the frozen encoder's identity when the stage reads cached features."""
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
