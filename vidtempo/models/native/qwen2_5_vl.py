"""Qwen2.5-VL as a native video backbone behind the ``VideoModel`` contract (TEMPLE's base model).

Our batches (``frames`` (B, T, 3, H, W) in [0, 1] + ``timestamps`` + one ``VIDEO_TOKEN_INDEX`` placeholder per
prompt) are turned into Qwen2.5-VL inputs in torch, the way its processor does it:

* each video's valid frames are resized to multiples of 28 under a pixel budget (``smart_resize``; with
  ``total_pixels`` the per-frame budget shrinks with the frame count, as qwen-vl-utils does), normalised with
  the CLIP mean/std, padded to an even count by repeating the last frame, and cut into 2x14x14 patches in the
  order the vision tower's 2x2 merger expects (``pixel_values_videos`` + ``video_grid_thw``);
* the placeholder becomes ``<|vision_start|>`` + ``<|video_pad|>`` x n + ``<|vision_end|>`` with
  n = T/2 * H/28 * W/28; labels over those positions are ``IGNORE_INDEX``;
* ``second_per_grid_ts`` = 2 x the mean frame spacing from ``timestamps``, so the temporal axis of MRoPE counts
  real seconds (``tokens_per_second`` positions per second); the 3-D position ids are computed explicitly
  (:meth:`Qwen25VLVideoModel.prepare_inputs`).

Parts for ``trainable``: ``vision_encoder`` = the ViT without its merger, ``projector`` = the merger (the
"aligner"), ``llm`` = the language model + LM head, ``compressor`` = none (always 0 parameters). LoRA (peft)
wraps the whole HF model with targets scoped by regex: ``lora.target_modules`` inside the language model and,
when ``lora_vit`` is set, ``lora_vit.target_modules`` inside the ViT blocks (TEMPLE SFT).

Example:
    >>> import torch
    >>> model = Qwen25VLVideoModel(llm=tiny_qwen2_5_vl())
    >>> ids = torch.tensor([[5, -200, 7, 8]])
    >>> video = VideoInputs(frames=torch.rand(1, 4, 3, 56, 56), timestamps=torch.tensor([[0.5, 1.5, 2.5, 3.5]]))
    >>> out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clamp(min=0), video=video)
    >>> int(out.num_video_tokens[0]), tuple(out.logits.shape[:2])
    (8, (1, 13))
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtempo.data.inputs import unit_pixels
from vidtempo.models.interfaces import (
    IGNORE_INDEX,
    TrainableParts,
    VideoInputs,
    VideoModel,
    VideoModelOutput,
)
from vidtempo.models.label_head import LabelHead, check_plain_head, label_loss
from vidtempo.models.lora import LoraSettings
from vidtempo.models.native.qwen_batch import clip_groups, mrope_positions, segment_index, splice_video_tokens
from vidtempo.models.packed_attention import packed_forward

# The Qwen2.5-VL special tokens around vision content (the public tokenizer's added tokens).
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

# CLIP normalisation used by the Qwen2-VL / Qwen2.5-VL image processor (preprocessor_config.json).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

# huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json (8.29 B parameters).
QWEN2_5_VL_7B_INSTRUCT: dict[str, Any] = {
    "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
    "max_window_layers": 28, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "use_sliding_window": False,
    "sliding_window": 32768, "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_start_token_id": 151652, "vision_end_token_id": 151653, "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_channels": 3,
        "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
        "hidden_act": "silu",
    },
}  # fmt: skip

# Tiny random shapes for tests / CPU recipes; the vision token ids match tiny_qwen2_5_vl_tokenizer().
TINY_QWEN2_5_VL: dict[str, Any] = {
    "vocab_size": 520, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "tie_word_embeddings": False,
    "bos_token_id": None, "eos_token_id": 3, "pad_token_id": 1,
    "vision_start_token_id": 512, "vision_end_token_id": 513, "image_token_id": 515, "video_token_id": 516,
    "vision_config": {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
        "fullatt_block_indexes": [1], "tokens_per_second": 2,
    },
}  # fmt: skip

LLM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VIT_LINEARS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")  # ViT blocks; the merger is the aligner
PARTS = ("vision_encoder", "audio_encoder", "compressor", "projector", "llm")


# ------------------------------------------------------------------------------------------ pixels
def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 3136,
                 max_pixels: int = 768 * 28 * 28) -> tuple[int, int]:  # fmt: skip
    """(h, w) multiples of ``factor`` close to (height, width) with ``min_pixels <= h*w <= max_pixels``.

    Same rule as the Qwen2-VL processor's ``smart_resize`` (round to the factor, then rescale both sides by
    one factor when the area is out of bounds, keeping the aspect ratio).
    """
    if height < 1 or width < 1:
        raise ValueError(f"smart_resize: frame size must be positive, got {height}x{width}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def frame_pixel_budget(num_frames: int, min_pixels: int, max_pixels: int, total_pixels: int | None) -> int:
    """Per-frame pixel cap: ``max_pixels``, lowered to ``total_pixels / T * 2`` when a clip budget is set.

    qwen-vl-utils' video rule (VIDEO_TOTAL_PIXELS; TEMPLE used 9e6 with 1 fps, <= 600 frames), never below
    ``1.05 * min_pixels``.
    """
    if total_pixels is None:
        return max_pixels
    return max(min(max_pixels, int(total_pixels / max(num_frames, 1) * 2)), int(min_pixels * 1.05))


def patchify_video(frames: torch.Tensor, temporal_patch: int = 2, patch: int = 14,
                   merge: int = 2) -> tuple[torch.Tensor, tuple[int, int, int]]:  # fmt: skip
    """Normalised frames (T, 3, H, W), T % temporal_patch == 0, H and W multiples of patch*merge ->
    (patches (t*h*w, 3*temporal_patch*patch*patch), (t, h, w)) in the vision tower's input order.

    Patches are listed merge-window by merge-window (each 2x2 window's 4 patches consecutive), channels
    first then time then the 14x14 pixels inside a patch: the layout of the Qwen2-VL image processor.
    """
    return patchify_clips(frames[None], temporal_patch, patch, merge)


def patchify_clips(clips: torch.Tensor, temporal_patch: int = 2, patch: int = 14,
                   merge: int = 2) -> tuple[torch.Tensor, tuple[int, int, int]]:  # fmt: skip
    """K clips of one size (K, T, 3, H, W) -> (patches (K*t*h*w, D), (t, h, w)): :func:`patchify_video` of each
    clip, concatenated clip by clip, in one reshape."""
    k, t_len, channels, height, width = clips.shape
    t, h, w = t_len // temporal_patch, height // patch, width // patch
    if t * temporal_patch != t_len or h % merge or w % merge or h * patch != height or w * patch != width:
        raise ValueError(f"patchify_video: got {tuple(clips.shape[1:])}; need T % {temporal_patch} == 0 and H, W "
                         f"multiples of {patch * merge}")  # fmt: skip
    x = clips.reshape(k, t, temporal_patch, channels, h // merge, merge, patch, w // merge, merge, patch)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)  # (K, t, h/m, w/m, m, m, C, tp, p, p)
    return x.reshape(k * t * h * w, channels * temporal_patch * patch * patch), (t, h, w)


@dataclass
class VideoPatches:
    """One video ready for the vision tower: patches (P, 3*2*14*14), grid (t, h, w), seconds per grid step."""

    patches: torch.Tensor
    grid: tuple[int, int, int]
    second_per_grid: float

    @property
    def num_tokens(self) -> int:
        """Merged tokens the LLM sees (2x2 spatial merge)."""
        t, h, w = self.grid
        return t * h * w // 4


@dataclass
class _ClipGroup:
    """K clips of one size: patches (K*P, D) clip by clip, grid (t, h, w), float64 seconds per grid step (K,)."""

    patches: torch.Tensor
    grid: tuple[int, int, int]
    second_per_grid: torch.Tensor


@dataclass
class _BatchClips:
    """A batch's clips in row order: patches (sum P, D), grid (V, 3) long, second_per_grid (V,) float32 of the V
    rows with a video; per row (B): has_video, tokens (merged video tokens), row_grid (B, 3), row_seconds."""

    patches: torch.Tensor
    grid: torch.Tensor
    second_per_grid: torch.Tensor
    has_video: torch.Tensor
    tokens: torch.Tensor
    row_grid: torch.Tensor
    row_seconds: torch.Tensor

    @classmethod
    def assemble(cls, parts: list[_ClipGroup], rows: list[torch.Tensor], batch: int) -> _BatchClips:
        """Groups (each with its ascending rows) -> the batch in row order (one gather when groups interleave)."""
        device = parts[0].patches.device
        rows_cat = torch.cat([r.to(device) for r in rows])  # (V,) videos in group order
        grids = torch.cat([torch.tensor([p.grid], device=device).expand(len(r), 3) for p, r in zip(parts, rows)])
        seconds = torch.cat([p.second_per_grid.to(device) for p in parts]).float()  # fp32 as the processor's
        patches = torch.cat([p.patches for p in parts]) if len(parts) > 1 else parts[0].patches
        if len(parts) > 1:  # videos back into row order
            order = torch.argsort(rows_cat)
            sizes = grids.prod(-1)  # (V,) patches per video, group order
            total = sum(int(p.patches.shape[0]) for p in parts)
            patches = patches[segment_index((sizes.cumsum(0) - sizes)[order], sizes[order], total)]
            rows_cat, grids, seconds = rows_cat[order], grids[order], seconds[order]
        has_video = torch.zeros(batch, dtype=torch.bool, device=device).index_fill(0, rows_cat, True)
        row_grid = torch.zeros(batch, 3, dtype=torch.long, device=device).index_copy(0, rows_cat, grids)
        row_seconds = torch.zeros(batch, dtype=torch.float32, device=device).index_copy(0, rows_cat, seconds)
        return cls(patches, grids, seconds, has_video, row_grid.prod(-1) // 4, row_grid, row_seconds)


# ------------------------------------------------------------------------------------------ backbone
def _hf_config(config: dict[str, Any]) -> Any:
    from transformers import Qwen2_5_VLConfig

    config = dict(config)
    config.pop("model_type", None)
    vision = dict(config.pop("vision_config", None) or {})
    ids = {k: config.pop(k) for k in ("vision_start_token_id", "vision_end_token_id", "image_token_id",
                                      "video_token_id") if k in config}  # fmt: skip
    tie = config.get("tie_word_embeddings", False)
    return Qwen2_5_VLConfig(text_config=config, vision_config=vision, tie_word_embeddings=tie, **ids)


class Qwen25VLBackbone(nn.Module):
    """A ``Qwen2_5_VLForConditionalGeneration`` built offline from a config (random init), weights loaded
    in one explicit step. Plays the ``llm`` part of the model node (so checkpoints reload its base weights).

    Args:
        name_or_path: local directory or cached hub id the weights come from (``load_pretrained``).
        config: text-model keys at the top level, ``vision_config`` and the vision token ids
            (see ``QWEN2_5_VL_7B_INSTRUCT``); without it the config is read offline from ``name_or_path``.
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2``.
        gradient_checkpointing: activation checkpointing in the LLM and ViT blocks.

    Example:
        >>> backbone = tiny_qwen2_5_vl()
        >>> backbone.hidden_size, backbone.config.video_token_id
        (64, 516)
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

        if config is not None:
            hf_config = _hf_config(config)
        elif name_or_path is not None:
            try:
                hf_config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
            except OSError as err:
                raise FileNotFoundError(
                    f"Qwen2.5-VL '{name_or_path}' is not available offline (no local directory or cached copy); "
                    "give a local directory or a `config:` mapping"
                ) from err
        else:
            raise ValueError("Qwen25VLBackbone needs a config mapping or a name_or_path")
        self.name_or_path = name_or_path
        self.attn_implementation = attn_implementation
        self.gradient_checkpointing = gradient_checkpointing
        self.model = Qwen2_5_VLForConditionalGeneration._from_config(
            hf_config, attn_implementation=attn_implementation
        )
        from vidtempo.models.native.qwen_vision import batch_vision_tower

        batch_vision_tower(self.model.model.visual)  # no per-video / per-frame loops in the ViT (#27 item 7)
        if gradient_checkpointing:
            _enable_checkpointing(self.model)

    @property
    def config(self) -> Any:
        return _unwrap(self.model).config

    @property
    def hidden_size(self) -> int:
        return int(self.config.text_config.hidden_size)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    # built under ``vidtempo.models.weights.empty_init`` by ``build_video_llm``: every parameter loads here
    lean_load = True

    def load_pretrained(self, path: str | Path | None = None, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> None:  # fmt: skip
        """Load weights from ``path`` (default ``name_or_path``): a local directory or a cached hub id, tensor by
        tensor from its safetensors files into ``dtype`` (default: the parameters' dtype) on ``device``. Both
        layouts load: the hub's (``model.*`` = the language model, ``visual.*``) and transformers 5's in-memory
        one (``model.language_model.*``, ``model.visual.*``)."""
        from vidtempo.models.llms.hf import check_config
        from vidtempo.models.weights import checkpoint_files, load_weights

        source = str(path or self.name_or_path or "")
        if not source:
            raise ValueError("load_pretrained needs a path (this Qwen2.5-VL was built from a config only)")
        if hasattr(self.model, "peft_config"):
            raise ValueError(
                "load_pretrained must run before LoRA wraps the model (build_video_llm does this)"
            )
        check_config(source, self.model.config.text_config)
        load_weights(self.model, checkpoint_files(source), dtype=dtype, device=device, rename=_hub_to_module,
                     optional=lambda k: "rotary_emb" in k)  # fmt: skip

    def forward(self, **kwargs: Any) -> Any:
        return self.model(**kwargs)


def _hub_to_module(key: str) -> str:
    """A Qwen2.5-VL checkpoint key (hub layout or transformers 5's) -> the module's state-dict key."""
    if key.startswith(("model.language_model.", "model.visual.", "lm_head.")):
        return key
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("model."):
        return "model.language_model." + key[len("model.") :]
    return key


def _enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing in the LLM and ViT blocks (the method was renamed in transformers 5.2x)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # pragma: no cover - older transformers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _unwrap(model: nn.Module) -> Any:
    """The HF ``Qwen2_5_VLForConditionalGeneration`` inside a peft wrapper (LoRA layers stay in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def tiny_qwen2_5_vl(**overrides: Any) -> Qwen25VLBackbone:
    """A random Qwen2.5-VL: ViT depth 2 / width 32, 2-layer 64-wide LLM, vocab 520 (tiny tokenizer + vision
    tokens). ``overrides`` replace top-level config keys (``vision_config`` is merged)."""
    config = {**TINY_QWEN2_5_VL, **overrides}
    config["vision_config"] = {**TINY_QWEN2_5_VL["vision_config"], **(overrides.get("vision_config") or {})}
    return Qwen25VLBackbone(config=config)


def qwen2_5_vl_7b_instruct(name_or_path: str | None = None, config: dict[str, Any] | None = None,
                           **kw: Any) -> Qwen25VLBackbone:  # fmt: skip
    """Qwen2.5-VL-7B-Instruct (8.29 B parameters); weights from ``name_or_path`` on ``load_pretrained``.
    ``config``: keys merged over the preset (``vision_config`` merged too), e.g. a reduced depth."""
    merged = {**QWEN2_5_VL_7B_INSTRUCT, **(config or {})}
    merged["vision_config"] = {**QWEN2_5_VL_7B_INSTRUCT["vision_config"], **((config or {}).get("vision_config") or {})}
    return Qwen25VLBackbone(name_or_path or "Qwen/Qwen2.5-VL-7B-Instruct", config=merged, **kw)


def tiny_qwen2_5_vl_tokenizer(vocab_size: int = 512) -> Any:
    """The tiny BPE tokenizer plus the Qwen2.5-VL vision special tokens (ids 512-516, as ``TINY_QWEN2_5_VL``)."""
    from vidtempo.models.tokenizers import tiny_tokenizer

    tok = tiny_tokenizer(vocab_size)
    tok.add_tokens(list(VISION_TOKENS), special_tokens=True)
    return tok


# ------------------------------------------------------------------------------------------ the model
class Qwen25VLVideoModel(VideoModel):
    """Qwen2.5-VL as a :class:`~vidtempo.models.interfaces.VideoModel` (forward / generate / trainable / LoRA /
    checkpoint contract). Capabilities: ``hidden_states``; no audio, no cached features, and its merged video
    tokens cover two frames each (no per-frame ``token_frames``).

    Args:
        llm: the :class:`Qwen25VLBackbone` (recipe: ``llm: {_target_: ...tiny_qwen2_5_vl}``).
        trainable: which parts train (``TrainableParts`` or a dict); ``vision_encoder`` may be ``"lora"``
            (needs ``lora_vit``), ``llm`` may be ``"lora"``; ``compressor`` has no parameters.
        lora: LoRA for the language model (TEMPLE DPO: r 32, alpha 64, all-linear); ``target_modules`` are
            LLM linear names (``all-linear`` = q/k/v/o/gate/up/down) or one regex over full module names.
        lora_vit: LoRA settings of an adapter that also covers the ViT, used when a stage trains
            ``vision_encoder: lora`` (TEMPLE SFT: r 32, alpha 32); its ``target_modules`` name ViT-block
            linears (``all-linear`` = qkv/proj/gate/up/down; the merger stays out).
        max_length: longest sequence after the video tokens are inserted (``ValueError`` beyond).
        min_pixels / max_pixels: per-frame pixel bounds of ``smart_resize`` (TEMPLE: 3136 / 768*28*28).
        total_pixels: pixel budget of a whole clip (TEMPLE: 9e6); None = per-frame cap only.

    Example:
        >>> model = Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), trainable={"llm": "lora"},
        ...                            lora={"r": 4, "alpha": 8, "target_modules": "all-linear"})
        >>> model.has_lora, model.parameter_counts()["compressor"]
        (True, (0, 0))
    """

    def __init__(
        self,
        *,
        llm: Qwen25VLBackbone,
        trainable: TrainableParts | dict[str, Any] | None = None,
        lora: LoraSettings | dict[str, Any] | None = None,
        lora_vit: LoraSettings | dict[str, Any] | None = None,
        max_length: int | None = None,
        min_pixels: int = 4 * 28 * 28,
        max_pixels: int = 768 * 28 * 28,
        total_pixels: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(llm, Qwen25VLBackbone):
            raise TypeError(f"Qwen25VLVideoModel: llm must be a Qwen25VLBackbone, got {type(llm).__name__}")
        if min_pixels < 28 * 28 or max_pixels < min_pixels:
            raise ValueError(f"need 784 <= min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
        self.llm = llm
        self.audio_encoder = None
        self.max_length = max_length
        self.min_pixels, self.max_pixels, self.total_pixels = min_pixels, max_pixels, total_pixels
        self.lora = lora if isinstance(lora, LoraSettings) or lora is None else LoraSettings(**lora)
        self.lora_vit = (
            lora_vit if isinstance(lora_vit, LoraSettings) or lora_vit is None else LoraSettings(**lora_vit)
        )
        self._lora_scope: tuple[str, ...] = ()
        self.base_modified = False
        self.trainable = (
            trainable if isinstance(trainable, TrainableParts) else TrainableParts(**(trainable or {}))
        )
        mean, std = torch.tensor(IMAGE_MEAN).view(3, 1, 1), torch.tensor(IMAGE_STD).view(3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.set_trainable(self.trainable)

    # ----------------------------------------------------------------- parts
    @property
    def hf(self) -> Any:
        """The ``Qwen2_5_VLForConditionalGeneration`` (inside peft when LoRA is on)."""
        return _unwrap(self.llm.model)

    capabilities = frozenset({"hidden_states", "embed_frames", "packing"})

    @property
    def hidden_size(self) -> int:
        return int(self.llm.hidden_size)

    @property
    def frame_size(self) -> int:
        """Side of the largest square frame within the per-frame pixel cap (multiple of 28)."""
        return max(28, int(math.sqrt(self.max_pixels)) // 28 * 28)

    def video_tokens(self, num_frames: int, audio: bool = False) -> int:
        """Merged tokens for ``num_frames`` square frames of :attr:`frame_size` (the clip budget applied)."""
        side = self.frame_size
        cap = frame_pixel_budget(num_frames, self.min_pixels, self.max_pixels, self.total_pixels)
        h, w = smart_resize(side, side, 28, self.min_pixels, cap)
        return math.ceil(num_frames / 2) * (h // 28) * (w // 28)

    @staticmethod
    def part_of(name: str) -> str:
        """Which trainable part a parameter name belongs to (``projector`` = the ViT's merger)."""
        if ".visual.merger." in f".{name}":
            return "projector"
        if ".visual." in f".{name}":
            return "vision_encoder"
        return "llm"

    # ----------------------------------------------------------------- trainable / LoRA
    def set_trainable(self, plan: TrainableParts) -> None:
        """Apply a freeze plan; the first plan with a ``"lora"`` part wraps the model with peft."""
        for part in ("compressor", "projector", "audio_encoder"):
            if getattr(plan, part) == "lora":
                raise ValueError(
                    f"trainable.{part}: lora is not supported by Qwen25VLVideoModel (use true/false)"
                )
        self.trainable = plan
        scope = tuple(p for p in ("llm", "vision_encoder") if getattr(plan, p) == "lora")
        if scope:
            self._ensure_lora(scope)
        for name, param in self.llm.named_parameters():
            flag = getattr(plan, self.part_of(name))
            param.requires_grad = "lora_" in name if flag == "lora" else bool(flag)

    def trains_base(self, plan: TrainableParts) -> bool:
        """Every HF weight (ViT and merger included) lives under ``llm.``: training any of them needs a full save."""
        return plan.llm is True or plan.vision_encoder is True or plan.projector is True

    def _ensure_lora(self, scope: tuple[str, ...]) -> None:
        if "vision_encoder" in scope and self.lora_vit is None:
            raise ValueError("trainable.vision_encoder: lora needs model.lora_vit (the ViT-covering adapter)")
        if self.has_lora:
            if "vision_encoder" in scope and "vision_encoder" not in self._lora_scope:
                raise ValueError(
                    "this stage trains ViT LoRA but the adapter in place covers the LLM only: merge it first "
                    "(merge_lora_after: true on the previous stage)"
                )
            return
        from peft import LoraConfig, get_peft_model

        settings = self.lora_vit if "vision_encoder" in scope else (self.lora or LoraSettings())
        assert settings is not None
        config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=self._target_regex("vision_encoder" in scope))  # fmt: skip
        self.llm.model = get_peft_model(self.llm.model, config)
        self._lora_scope = ("llm", "vision_encoder") if "vision_encoder" in scope else ("llm",)

    def _target_regex(self, with_vit: bool) -> str:
        llm_targets = (self.lora or LoraSettings()).target_modules
        if isinstance(llm_targets, str) and llm_targets != "all-linear":
            llm_re = llm_targets  # a user regex over full module names
        else:
            names = LLM_LINEARS if llm_targets == "all-linear" else tuple(llm_targets)
            llm_re = (
                rf".*language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{'|'.join(map(re.escape, names))})"
            )
        if not with_vit:
            return llm_re
        assert self.lora_vit is not None
        vit = self.lora_vit.target_modules
        vit_names = VIT_LINEARS if vit == "all-linear" else ((vit,) if isinstance(vit, str) else tuple(vit))
        vit_re = rf".*visual\.blocks\.\d+\.(?:attn|mlp)\.(?:{'|'.join(map(re.escape, vit_names))})"
        return f"(?:{llm_re})|(?:{vit_re})"

    def merge_lora(self) -> None:
        """Fold the adapter into the weights and drop it (TEMPLE's hand-over between curriculum levels)."""
        super().merge_lora()
        self._lora_scope = ()

    def train(self, mode: bool = True) -> Qwen25VLVideoModel:
        super().train(mode)
        if not self.trainable.vision_encoder:  # frozen ViT stays deterministic
            self.hf.model.visual.eval()
        return self

    def embed_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D): each frame's merged vision tokens (ViT + merger, as a one-frame
        video), averaged; all N frames go through the tower in one call."""
        clips = self._clip_patches(pixels[:, None], torch.zeros(len(pixels), 1, device=pixels.device))
        grid = torch.tensor([clips.grid], device=pixels.device).expand(len(pixels), 3)
        feats = self.hf.model.get_video_features(clips.patches, grid)
        tokens = feats.pooler_output if hasattr(feats, "pooler_output") else feats  # transformers 5: an output
        return torch.stack(tuple(tokens)).float().mean(dim=1)  # (N, N_tok, D) -> (N, D)

    # ----------------------------------------------------------------- batch -> Qwen2.5-VL inputs
    def video_patches(self, frames: torch.Tensor, timestamps: torch.Tensor) -> VideoPatches:
        """One video's valid frames (T, 3, H, W) in [0, 1] + timestamps (T,) -> patches for the ViT."""
        clips = self._clip_patches(frames[None], timestamps[None])
        return VideoPatches(clips.patches, clips.grid, float(clips.second_per_grid[0]))

    def _clip_patches(self, frames: torch.Tensor, timestamps: torch.Tensor) -> _ClipGroup:
        """K clips of C valid frames each, (K, C, 3, H, W) uint8 or [0, 1] + (K, C) seconds -> their patches
        (K*P, 3*2*14*14) clip by clip, one grid and (K,) float64 seconds per grid step, in one batched pass:
        resized to multiples of 28 under the pixel budget, normalised with the CLIP mean/std, padded to a whole
        temporal patch by repeating the last frame (the Qwen2-VL processor's steps)."""
        vc = self.hf.config.vision_config
        tp, patch, merge = int(vc.temporal_patch_size), int(vc.patch_size), int(vc.spatial_merge_size)
        k, count = frames.shape[:2]
        cap = frame_pixel_budget(count, self.min_pixels, self.max_pixels, self.total_pixels)
        h, w = smart_resize(frames.shape[-2], frames.shape[-1], patch * merge, self.min_pixels, cap)
        x = unit_pixels(frames.flatten(0, 1))  # (K*C, 3, H, W) uint8 0-255 -> fp32 [0, 1] on the device
        if (h, w) != tuple(frames.shape[-2:]):
            x = nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp(0.0, 1.0)
        mean, std = x.new_tensor(IMAGE_MEAN).view(3, 1, 1), x.new_tensor(IMAGE_STD).view(3, 1, 1)  # fp32 always
        x = ((x - mean) / std).view(k, count, 3, h, w)
        if count % tp:  # the processor repeats the last frame up to a whole temporal patch
            x = torch.cat([x, x[:, -1:].expand(-1, tp - count % tp, -1, -1, -1)], 1)
        patches, grid = patchify_clips(x, tp, patch, merge)
        return _ClipGroup(patches, grid, tp * _frame_steps(timestamps))

    def prepare_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        video: VideoInputs | None = None,
        padding_side: str = "right",
    ) -> dict[str, Any]:
        """Our batch -> Qwen2.5-VL kwargs: ``input_ids``, ``attention_mask``, ``labels`` (or None),
        ``pixel_values_videos``, ``video_grid_thw`` (V, 3), ``second_per_grid_ts`` (V,), ``mm_token_type_ids``,
        ``position_ids`` (3, B, L') and ``num_video_tokens`` (B,).

        Vectorised over the batch (``vidtempo.models.native.qwen_batch``): clips are patchified one group per
        distinct frame count, the spans spliced and the 3-D positions computed with tensor arithmetic."""
        _check_unsupported(video)
        cfg = self.hf.config
        batch, device = input_ids.shape[0], input_ids.device
        clips = self._videos(video, batch)
        spliced = splice_video_tokens(
            input_ids, attention_mask, labels,
            clips.tokens if clips else torch.zeros(batch, dtype=torch.long, device=device),
            clips.has_video if clips else torch.zeros(batch, dtype=torch.bool, device=device),
            ids=(int(cfg.vision_start_token_id), int(cfg.video_token_id), int(cfg.vision_end_token_id)),
            pad_id=int(cfg.text_config.pad_token_id or 0), padding_side=padding_side, max_length=self.max_length,
        )  # fmt: skip
        ids, mask = spliced.input_ids, spliced.attention_mask
        mm_types = (ids == cfg.video_token_id).int() * 2  # 0 text, 2 video
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": spliced.labels,
                               "mm_token_type_ids": mm_types, "num_video_tokens": spliced.video_tokens}  # fmt: skip
        if clips is not None:
            out["pixel_values_videos"] = clips.patches
            out["video_grid_thw"] = clips.grid.to(device)
            out["second_per_grid_ts"] = clips.second_per_grid.to(device)  # fp32 even under bf16-true
            interval = clips.row_seconds.to(device) * cfg.vision_config.tokens_per_second  # fp32, as get_rope_index
            out["position_ids"] = mrope_positions(spliced, clips.row_grid, interval,
                                                  int(cfg.vision_config.spatial_merge_size))  # fmt: skip
        else:
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out["position_ids"] = pos.unsqueeze(0).expand(3, -1, -1)
        return out

    def _videos(self, video: VideoInputs | None, batch: int) -> _BatchClips | None:
        """Every row's clip as patches, in row order (rows without valid frames have none); None = no video."""
        if video is None:
            return None
        frames = video.frames
        assert frames is not None
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (U, T, 3, H, W) in [0, 1], got {tuple(frames.shape)}")
        frame_mask, timestamps = video.mask().bool(), video.times()
        groups = clip_groups(frame_mask.sum(1))
        if not groups:
            return None
        parts: list[_ClipGroup] = []
        for count, rows in groups:  # one iteration per distinct frame count (one when a recipe fixes it)
            src = rows if video.clip_index is None else video.clip_index.to(rows.device)[rows]
            clip, ts = frames[src.to(frames.device)], timestamps[rows.to(timestamps.device)]  # (k, T, ...), (k, T)
            if count < frames.shape[1]:
                valid = frame_mask[rows].to(frames.device)
                clip = clip[valid].view(len(rows), count, *clip.shape[2:])
                ts = ts[valid.to(ts.device)].view(len(rows), count)
            parts.append(self._clip_patches(clip, ts))
        return _BatchClips.assemble(parts, [rows for _, rows in groups], batch)

    # ----------------------------------------------------------------- forward / generate
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
        video: VideoInputs | None = None, *, return_hidden: bool = False, packing: int | None = None,
        loss_head: LabelHead | None = None,
    ) -> VideoModelOutput:  # fmt: skip
        """Teacher-forced forward; input_ids (B, L) with one -200 placeholder, ``video.frames`` (U, T, 3, H, W).
        ``packing=N``: the LLM runs on rows of at most N tokens holding several samples, each with its own 3-D
        mRoPE positions (``vidtempo.models.packed_attention``; the same loss, outputs in the unpacked layout).
        With ``loss_head`` (and labels, unpacked) the loss comes from the label positions only; ``logits`` is None."""
        inputs = self.prepare_inputs(input_ids, attention_mask, labels, video)
        embeds = self._embed(inputs)  # (B, L', H)
        if packing is not None:
            packed = packed_forward(self.hf, embeds, inputs["attention_mask"], inputs["labels"], packing,
                                    position_ids=inputs["position_ids"], return_hidden=return_hidden, use_cache=False,
                                    attn_implementation=getattr(self.hf.config, "_attn_implementation", None))  # fmt: skip
            info = {"video_grid_thw": inputs.get("video_grid_thw"), "packed_rows": len(packed.plan.rows)}
            states = packed.hidden_states
            return VideoModelOutput(packed.loss, packed.logits, inputs["labels"], inputs["attention_mask"],
                                    inputs["num_video_tokens"], info, states[-1] if states else None, states)  # fmt: skip
        if loss_head is not None and inputs["labels"] is not None:
            return self._label_forward(inputs, embeds, loss_head, return_hidden)
        out = self.hf(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                      position_ids=inputs["position_ids"], use_cache=False,
                      **({"output_hidden_states": True} if return_hidden else {}))  # fmt: skip
        logits, lab = out.logits, inputs["labels"]
        loss = None
        if lab is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), lab[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        info = {"video_grid_thw": inputs.get("video_grid_thw")}
        states = tuple(out.hidden_states) if return_hidden else None
        return VideoModelOutput(loss, logits, lab, inputs["attention_mask"], inputs["num_video_tokens"], info,
                                states[-1] if states else None, states)  # fmt: skip

    def _label_forward(self, inputs: dict[str, Any], embeds: torch.Tensor, loss_head: LabelHead,
                       return_hidden: bool) -> VideoModelOutput:  # fmt: skip
        """The language model, then the LM head at the labelled positions only (``label_head``)."""
        check_plain_head(self.hf.config.text_config)
        out = self.hf.model.language_model(
            inputs_embeds=embeds, attention_mask=inputs["attention_mask"], position_ids=inputs["position_ids"],
            use_cache=False, **({"output_hidden_states": True} if return_hidden else {}),
        )  # fmt: skip
        loss = label_loss(out.last_hidden_state, inputs["labels"], self.hf.lm_head, loss_head)
        states = tuple(out.hidden_states) if return_hidden else None
        return VideoModelOutput(loss, None, inputs["labels"], inputs["attention_mask"], inputs["num_video_tokens"],
                                {"video_grid_thw": inputs.get("video_grid_thw")},
                                states[-1] if states else None, states)  # fmt: skip

    def _embed(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Token embeddings with the merged video features scattered over the ``<|video_pad|>`` positions."""
        hf = self.hf
        embeds = hf.get_input_embeddings()(inputs["input_ids"])  # (B, L', H)
        if "pixel_values_videos" not in inputs:
            return embeds
        plan = self.trainable
        grad = torch.is_grad_enabled() and bool(plan.vision_encoder or plan.projector)
        with torch.set_grad_enabled(grad):
            feats = hf.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        video = torch.cat(feats.pooler_output).to(embeds.dtype)  # (sum N, H)
        where = (inputs["input_ids"] == hf.config.video_token_id).unsqueeze(-1)
        return embeds.masked_scatter(where, video)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, video: VideoInputs | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        """Greedy by default; returns only the new token ids (B, L_new)."""
        inputs = self.prepare_inputs(input_ids, attention_mask, None, video, "left")
        for key in ("labels", "num_video_tokens", "position_ids"):
            inputs.pop(key)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("max_new_tokens", 32)
        self.hf.model.rope_deltas = None  # stale deltas from an earlier call must not leak into this one
        out = self.hf.generate(**inputs, **generate_kwargs)
        return out[:, inputs["input_ids"].shape[1] :]

    # ----------------------------------------------------------------- reporting
    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        """{part: (total, trainable)}; ``compressor`` is (0, 0): the 2x2 merge has no separate weights."""
        counts = {p: [0, 0] for p in ("vision_encoder", "compressor", "projector", "llm")}
        for name, param in self.llm.named_parameters():
            c = counts[self.part_of(name)]
            c[0] += param.numel()
            c[1] += param.numel() if param.requires_grad else 0
        return {k: (v[0], v[1]) for k, v in counts.items()}

    def trainable_plan(self) -> dict[str, Any]:
        return asdict(self.trainable)


def _frame_steps(timestamps: torch.Tensor) -> torch.Tensor:
    """(K, C) frame times of K clips -> (K,) float64 mean spacing (s); 0.5 s (the processor's 2 fps default) for
    one frame. One host sync (the check), not one per clip."""
    count = timestamps.shape[1]
    if count < 2:
        return torch.full((len(timestamps),), 0.5, dtype=torch.float64, device=timestamps.device)
    step = (timestamps[:, -1] - timestamps[:, 0]).double() / (count - 1)
    bad = ~torch.isfinite(step) | (step <= 0)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"timestamps must increase within a video, got {timestamps[row].tolist()[:8]}")
    return step


def _check_unsupported(video: VideoInputs | None) -> None:
    if video is None:
        return
    if video.features is not None:
        raise ValueError("Qwen25VLVideoModel encodes pixels only: remove data.collator.feature_cache")
    if video.audio is not None:
        raise ValueError("Qwen25VLVideoModel has no audio path: set data.collator.audio: false")
