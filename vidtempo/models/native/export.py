"""Export a native Qwen2.5-VL ``VideoModel`` as a plain Hugging Face directory (LoRA merged) for serving stacks.

The directory holds what ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` read, and what vLLM / SGLang read through them:

* ``config.json`` (the installed transformers' layout, plus the pre-5.0 keys ``rope_scaling`` / ``rope_theta``
  and the text model's keys at the top level, as the released Qwen2.5-VL ``config.json`` has them, for
  readers built against older transformers), ``generation_config.json``;
* ``model.safetensors`` (sharded above 5 GB) with the released checkpoints' key names (``model.layers.*``,
  ``visual.*``, ``lm_head.*``), the adapter folded into the base weights;
* the tokenizer, the processor (``processor_config.json``, and the older ``preprocessor_config.json`` /
  ``video_preprocessor_config.json``) with the model's pixel bounds (``min_pixels`` / ``max_pixels``, the clip
  budget as ``cap_pixels_per_frame``), and a chat template
  (:func:`export_chat_template`) that renders OpenAI-style content parts exactly as vidtempo's training
  prompts (``<video>`` + newline + question).

Example:
    >>> import tempfile, pathlib
    >>> from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl, tiny_qwen2_5_vl_tokenizer
    >>> model = Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), min_pixels=784)
    >>> out = export_hf(model, tiny_qwen2_5_vl_tokenizer(), pathlib.Path(tempfile.mkdtemp()) / "hf")
    >>> from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    >>> hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(out)
    >>> type(AutoProcessor.from_pretrained(out)).__name__, hf.config.video_token_id
    ('Qwen2_5_VLProcessor', 516)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from vidtempo.models.native.qwen2_5_vl import IMAGE_MEAN, IMAGE_STD, Qwen25VLVideoModel
from vidtempo.utils.atomic import atomic_dir

# Text-model keys the released Qwen2.5-VL config.json keeps at the top level (pre-transformers-5 layout).
LEGACY_TOP_LEVEL = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "max_window_layers", "rms_norm_eps",
    "use_sliding_window", "sliding_window", "attention_dropout", "initializer_range", "bos_token_id",
    "eos_token_id", "pad_token_id", "use_cache",
)  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_chat_template(base_template: str, video_span: str, image_span: str) -> str:
    """A chat template that accepts OpenAI-style content parts and renders them the way vidtempo trains.

    Messages whose ``content`` is a list of parts (``{"type": "video"}`` / ``"video_url"``, ``"image"`` /
    ``"image_url"``, ``"text"``) become one string: a vision span per media part, the text parts, joined by
    newlines (``[video, text]`` -> ``<span>\\nquestion``, vidtempo's ``<video>\\nquestion``). Those messages are
    then rendered by ``base_template`` (the checkpoint tokenizer's own template) unchanged; string content
    passes through as it is.
    """
    pre = (
        "{%- set _vt = namespace(msgs=[]) -%}"
        "{%- for _m in messages -%}"
        "{%- if _m['content'] is string or _m['content'] is none -%}"
        "{%- set _vt.msgs = _vt.msgs + [_m] -%}"
        "{%- else -%}"
        "{%- set _p = namespace(texts=[]) -%}"
        "{%- for _part in _m['content'] -%}"
        "{%- if _part is string -%}{%- set _p.texts = _p.texts + [_part] -%}"
        "{%- elif _part['type'] in ['video', 'video_url'] or 'video' in _part -%}"
        f"{{%- set _p.texts = _p.texts + [{json.dumps(video_span)}] -%}}"
        "{%- elif _part['type'] in ['image', 'image_url'] or 'image' in _part -%}"
        f"{{%- set _p.texts = _p.texts + [{json.dumps(image_span)}] -%}}"
        "{%- elif _part['type'] == 'text' -%}{%- set _p.texts = _p.texts + [_part['text']] -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- set _vt.msgs = _vt.msgs + [{'role': _m['role'], 'content': _p.texts | join('\\n')}] -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- set messages = _vt.msgs -%}"
    )
    return pre + base_template


def hf_config_dict(config: Any) -> dict[str, Any]:
    """``config.to_dict()`` plus the pre-transformers-5 keys (``rope_scaling``, ``rope_theta``, the text
    model's keys at the top level) that readers built against older transformers look for."""
    out = config.to_dict()
    text = out.get("text_config") or {}
    rope = text.get("rope_parameters") or {}
    if "mrope_section" in rope:
        text.setdefault("rope_scaling", {"type": "mrope", "mrope_section": list(rope["mrope_section"])})
    if "rope_theta" in rope:
        text.setdefault("rope_theta", rope["rope_theta"])
    for key in LEGACY_TOP_LEVEL:
        if key in text and key not in out:
            out[key] = text[key]
    return out


def build_processor(model: Qwen25VLVideoModel, tokenizer: Any) -> Any:
    """A ``Qwen2_5_VLProcessor`` with the model's pixel bounds and the export chat template."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    vc = model.hf.config.vision_config
    geometry = {"patch_size": int(vc.patch_size), "temporal_patch_size": int(vc.temporal_patch_size),
                "merge_size": int(vc.spatial_merge_size), "image_mean": list(IMAGE_MEAN),
                "image_std": list(IMAGE_STD)}  # fmt: skip
    size = {"shortest_edge": int(model.min_pixels), "longest_edge": int(model.max_pixels)}
    video: dict[str, Any] = {"cap_pixels_per_frame": False}
    if model.total_pixels is not None:  # qwen-vl-utils' clip budget = 90 % of max_video_tokens tokens' pixels
        factor = int(vc.patch_size) * int(vc.spatial_merge_size)
        video = {"cap_pixels_per_frame": True,
                 "max_video_tokens": math.ceil(model.total_pixels / (factor * factor * 0.9))}  # fmt: skip
    image_processor = Qwen2VLImageProcessor(size=size, **geometry)
    video_processor = Qwen2VLVideoProcessor(size=size, **geometry, **video)
    template = export_chat_template(
        tokenizer.chat_template,
        "<|vision_start|><|video_pad|><|vision_end|>",
        "<|vision_start|><|image_pad|><|vision_end|>",
    )
    tokenizer.chat_template = template
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=template)  # fmt: skip


def write_legacy_processor_files(directory: Path) -> None:
    """``preprocessor_config.json`` / ``video_preprocessor_config.json`` beside transformers 5's nested
    ``processor_config.json``: the files (with ``min_pixels`` / ``max_pixels``) the released Qwen2.5-VL has and
    readers built against older transformers look for. transformers 5 reads either layout the same way."""
    nested = json.loads((directory / "processor_config.json").read_text())
    for key, name in (("image_processor", "preprocessor_config.json"),
                      ("video_processor", "video_preprocessor_config.json")):  # fmt: skip
        entry = dict(nested[key])
        size = entry.get("size") or {}
        entry.update(processor_class=nested.get("processor_class", "Qwen2_5_VLProcessor"),
                     min_pixels=size.get("shortest_edge"), max_pixels=size.get("longest_edge"))  # fmt: skip
        (directory / name).write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")


def check_vision_tokens(model: Qwen25VLVideoModel, tokenizer: Any) -> None:
    """The tokenizer's vision special tokens carry the ids the model config names (else the export would
    serve a model whose video placeholders point at other embeddings)."""
    cfg = model.hf.config
    expected = {"<|vision_start|>": cfg.vision_start_token_id, "<|vision_end|>": cfg.vision_end_token_id,
                "<|image_pad|>": cfg.image_token_id, "<|video_pad|>": cfg.video_token_id}  # fmt: skip
    got = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in expected}
    bad = {tok: (got[tok], want) for tok, want in expected.items() if got[tok] != want}
    if bad:
        detail = ", ".join(f"{tok} is {g} (config: {w})" for tok, (g, w) in bad.items())
        raise ValueError(f"the checkpoint's tokenizer does not match the model's vision token ids: {detail}")


def export_hf(model: Qwen25VLVideoModel, tokenizer: Any, out: str | Path, *, dtype: str | None = None,
              info: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``model`` (its LoRA adapter merged, in place) + ``tokenizer`` + processor to ``out`` atomically.

    ``dtype``: ``float32`` / ``bfloat16`` / ``float16`` (default: the weights' own dtype). ``info`` goes into
    the completion marker (``COMPLETE``) beside the files. Returns ``out``.
    """
    if not isinstance(model, Qwen25VLVideoModel):
        raise TypeError(f"export_hf needs a Qwen25VLVideoModel, got {type(model).__name__}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got '{dtype}'")
    check_vision_tokens(model, tokenizer)
    if model.has_lora:
        model.merge_lora()
    hf = model.hf
    if dtype is not None:
        hf.to(DTYPES[dtype])
    processor = build_processor(model, tokenizer)
    gen = hf.generation_config
    eos = tokenizer.eos_token_id
    if eos is not None and gen.eos_token_id is None:
        gen.eos_token_id = eos
    if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id
    out = Path(out)
    with atomic_dir(out, info=info) as tmp:
        hf.save_pretrained(str(tmp), max_shard_size="5GB")  # the released checkpoints' shard size
        processor.save_pretrained(str(tmp))
        write_legacy_processor_files(tmp)
        (tmp / "config.json").write_text(
            json.dumps(hf_config_dict(hf.config), indent=2, sort_keys=True) + "\n"
        )
    return out
