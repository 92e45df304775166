"""Hugging Face style save/load of a ``VideoModel``: ``model.safetensors`` + ``vidtempo.json`` (+ ``adapter/``
in peft format, + the tokenizer, + ``compressor_tokenizer/``: the text tokenizer of a compressor that reads the
instruction, e.g. TDC's Q-Former, which a reload uses instead of rebuilding it). With LoRA on a pretrained LLM
only the adapter and the non-LLM weights are stored (``adapter_only``); the base LLM reloads from its
``name_or_path``.

Example:
    >>> import tempfile
    >>> from vidtempo.models.build import build_video_llm
    >>> node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
    ...         "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}
    >>> d = tempfile.mkdtemp()
    >>> _ = save_pretrained(build_video_llm(node), d, model_config=node)
    >>> type(load_pretrained(d)[0]).__name__
    'VideoLLM'
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from vidtempo import __version__
from vidtempo.models.build import build_video_llm
from vidtempo.models.interfaces import VideoModel

CONFIG_NAME = "vidtempo.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_DIR = "adapter"
COMPRESSOR_TOKENIZER_DIR = "compressor_tokenizer"


def is_llm_base(key: str) -> bool:
    """A weight of the base LLM (not a LoRA factor nor a trained token row of peft ``trainable_token_indices``):
    left out of an adapter-only checkpoint."""
    return key.startswith("llm.") and "lora_" not in key and "trainable_tokens_" not in key


def saves_adapter_only(model: VideoModel) -> bool:
    """Whether :func:`save_pretrained` stores only the adapter by default: the LLM has LoRA, a source to reload
    its base weights from, and base weights that were neither trained nor merged."""
    source = getattr(model.llm, "name_or_path", None)
    return bool(model.has_lora and source and not getattr(model, "base_modified", False))


def save_pretrained(
    model: VideoModel,
    directory: str | Path,
    *,
    model_config: dict[str, Any],
    tokenizer: Any = None,
    adapter_only: bool | None = None,
    extra: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``directory``; returns the directory.

    ``state_dict`` overrides ``model.state_dict()`` (e.g. gathered from FSDP shards)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    base_source = getattr(model.llm, "name_or_path", None)
    if adapter_only is None:
        adapter_only = saves_adapter_only(model)
    if adapter_only and not base_source:
        raise ValueError("adapter_only needs an LLM with a name_or_path to reload its base weights from")
    tensors, aliases = {}, {}
    seen: dict[int, str] = {}
    for key, value in (state_dict if state_dict is not None else model.state_dict()).items():
        if adapter_only and is_llm_base(key):
            continue
        ptr = value.data_ptr()
        if ptr in seen and value.numel():  # tied weights: store once, record the alias
            aliases[key] = seen[ptr]
            continue
        seen[ptr] = key
        tensors[key] = value.detach().contiguous().cpu()
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    if model.has_lora:  # peft's own adapter format too (from the gathered weights when sharded)
        _save_peft_adapter(model, out / ADAPTER_DIR, state_dict)
    config = {
        "format_version": 1,
        "vidtempo_version": __version__,
        "model": _with_plan(model_config, model),
        "adapter_only": adapter_only,
        "llm_base": base_source,
        "aliases": aliases,
        **(extra or {}),
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    text_tokenizer = model.text_tokenizer()
    if text_tokenizer is not None and hasattr(text_tokenizer, "save_pretrained"):
        text_tokenizer.save_pretrained(str(out / COMPRESSOR_TOKENIZER_DIR))
    return out


def _save_peft_adapter(model: VideoModel, directory: Path, state_dict: dict[str, Any] | None) -> None:
    """``adapter/`` as peft writes it; ``state_dict`` (keys of the whole model, e.g. gathered from FSDP2
    shards) supplies the LoRA factors when the model's own parameters are sharded."""
    peft_model = model.llm.model
    if state_dict is None:
        peft_model.save_pretrained(str(directory))
        return
    prefix = next(name for name, module in model.named_modules() if module is peft_model) + "."
    own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix) and not is_llm_base(k)}
    peft_model.save_pretrained(str(directory), state_dict=own)


def restore_compressor_tokenizer(model: VideoModel, directory: str | Path) -> bool:
    """Give ``model.compressor`` the text tokenizer saved with the checkpoint in ``directory``, if any.

    The weights of a Q-Former's text embeddings belong to the token ids it was trained with; a tokenizer
    rebuilt from the recipe could number the words differently (the tiny one did before it was made
    deterministic), so the saved one wins. Returns True when one was restored.
    """
    saved = Path(directory) / COMPRESSOR_TOKENIZER_DIR
    if not saved.is_dir() or model.text_tokenizer() is None:  # no part reads text: keep it so
        return False
    from transformers import AutoTokenizer

    model.set_text_tokenizer(AutoTokenizer.from_pretrained(str(saved), local_files_only=True))
    return True


def _with_plan(model_config: dict[str, Any], model: VideoModel) -> dict[str, Any]:
    node = dict(model_config)
    node["trainable"] = asdict(model.trainable)
    if node["trainable"].get("llm") == "lora" and not model.has_lora:  # adapter merged away: no LoRA to rebuild
        node["trainable"]["llm"] = False
    if model.lora is not None:
        node["lora"] = asdict(model.lora)
    return node


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a vidtempo checkpoint: {CONFIG_NAME} is missing")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is empty or not JSON ({err}): an interrupted save? Re-run the training "
                         "command to write the checkpoint again") from err  # fmt: skip
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError(f"{path} has no 'model' entry: not a vidtempo checkpoint config")
    return config


def load_weights_into(
    model: VideoModel, directory: str | Path, config: dict[str, Any] | None = None
) -> tuple[list[str], list[str]]:
    """Load ``directory``'s tensors (tied aliases restored) and compressor tokenizer into a built ``model``.

    Returns the (missing, unexpected) keys of a non-strict ``load_state_dict`` for the caller to judge.
    """
    directory = Path(directory)
    config = config if config is not None else read_config(directory)
    state = load_file(str(directory / WEIGHTS_NAME))
    for alias, source in config.get("aliases", {}).items():
        state[alias] = state[source]
    missing, unexpected = model.load_state_dict(state, strict=False)
    restore_compressor_tokenizer(model, directory)
    return list(missing), list(unexpected)


_TRUSTED: ContextVar[bool] = ContextVar("vidtempo_trust_checkpoint_code", default=False)


@contextmanager
def trusting_checkpoint_code(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`load_pretrained` builds any class a checkpoint names (the CLI's
    ``--trust-checkpoint-code``); outside, only registered aliases and vidtempo classes."""
    token = _TRUSTED.set(bool(enabled))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


class UntrustedCheckpointError(ValueError):
    """A checkpoint names code outside vidtempo and its registry; loading it would run that code."""


def untrusted_targets(node: Any, key: str = "model") -> list[str]:
    """``key: target`` for every ``_target_`` in a model config that is neither a registered alias nor a
    ``vidtempo.`` class: what building the model from a copied checkpoint would import and call."""
    from vidtempo.registry import get_registry, kinds

    aliases = {name for kind in kinds() for name in get_registry(kind).names()}
    found = []
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and target not in aliases and not target.startswith("vidtempo."):
            found.append(f"{key}._target_: {target}")
        for child_key, child in node.items():
            found += untrusted_targets(child, f"{key}.{child_key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += untrusted_targets(child, f"{key}.{i}")
    return found


def load_pretrained(
    directory: str | Path, *, load_tokenizer: bool = True, trust_code: bool | None = None
) -> tuple[VideoModel, Any, dict[str, Any]]:
    """(model, tokenizer or None, config) from a directory written by :func:`save_pretrained`.

    A checkpoint is data: its ``vidtempo.json`` names the classes to build, and only registered aliases and
    vidtempo classes are built unless ``trust_code`` (default: the enclosing :func:`trusting_checkpoint_code`,
    the CLI's ``--trust-checkpoint-code``) says the checkpoint's source is trusted (a research class of one's
    own, named by dotted path)."""
    directory = Path(directory)
    config = read_config(directory)
    foreign = untrusted_targets(config.get("model"))
    if foreign and not (_TRUSTED.get() if trust_code is None else trust_code):
        raise UntrustedCheckpointError(
            f"checkpoint {directory} would import and run code outside vidtempo ({'; '.join(foreign[:3])}); "
            "pass --trust-checkpoint-code if you trust where it comes from"
        )
    weights = {"llm": config["llm_base"]} if config["adapter_only"] else None
    model = build_video_llm(config["model"], weights=weights)
    missing, unexpected = load_weights_into(model, directory, config)
    bad_missing = [k for k in missing if not (config["adapter_only"] and is_llm_base(k))]
    if bad_missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not match its model config: missing {bad_missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    tokenizer = None
    if load_tokenizer and (directory / "tokenizer_config.json").is_file():
        from vidtempo.models.tokenizers import load_tokenizer as _load

        tokenizer = _load(str(directory))
    return model, tokenizer, config
