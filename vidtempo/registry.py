"""Lazy alias tables: short recipe names -> ``"module:attr"`` strings, one table per component kind.

A recipe's ``_target_`` is either a dotted path to any callable (``mylab.gated.GatedQFormer`` works with
no registration) or an alias from the table of the node's kind. Nothing here imports model code: targets
are plain strings until :meth:`Registry.resolve` is called.

Third-party packages add aliases through entry points, one group per kind::

    [project.entry-points."vidtempo.compressor"]
    gated = "mylab.gated:GatedQFormer"

Example:
    >>> from vidtempo.registry import get_registry
    >>> "pool" in get_registry("compressor").names()
    True
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any


class RegistryError(KeyError):
    """An unknown alias or an unimportable target. ``str()`` gives the full message."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    """One alias: where its target lives and a one-line description."""

    target: str  # "package.module:attr"
    doc: str = ""


def import_target(target: str) -> Callable[..., Any]:
    """Import ``"pkg.mod:attr"`` or ``"pkg.mod.attr"`` and return the attribute."""
    if ":" in target:
        module_name, attr = target.split(":", 1)
    else:
        module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise RegistryError(f"'{target}' is neither a registered alias nor a dotted path 'pkg.module.Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RegistryError(f"cannot import module '{module_name}' for target '{target}': {err}") from err
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            raise RegistryError(f"module '{module_name}' has no attribute '{attr}' (target '{target}')") from err
    return obj


class Registry:
    """Alias table for one component kind. Duplicate names are errors unless ``override=True``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False

    def add(self, name: str, target: str, doc: str = "", *, override: bool = False) -> None:
        """Register ``name`` -> ``target`` (``"module:attr"``)."""
        if name in self._entries and not override and self._entries[name].target != target:
            raise RegistryError(
                f"{self.kind} alias '{name}' is already registered to {self._entries[name].target}; "
                "pass override=True to replace it"
            )
        self._entries[name] = Entry(target, doc)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=f"vidtempo.{self.kind}"):
            if ep.name not in self._entries:
                self._entries[ep.name] = Entry(ep.value, f"(plugin {ep.value})")

    def names(self) -> dict[str, Entry]:
        """All aliases of this kind, built-ins and plugins, sorted by name."""
        self._load_plugins()
        return dict(sorted(self._entries.items()))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def resolve(self, key: str) -> Callable[..., Any]:
        """Return the callable for an alias or a dotted path."""
        entries = self.names()
        if key in entries:
            return import_target(entries[key].target)
        if "." in key or ":" in key:
            return import_target(key)
        close = difflib.get_close_matches(key, entries, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(
            f"unknown {self.kind} '{key}'.{hint} Valid {self.kind} aliases: {', '.join(entries) or '(none)'}; "
            "or give a dotted path 'package.module.Class'."
        )


_REGISTRIES: dict[str, Registry] = {}

# Built-in aliases: plain strings, so importing this module imports no model code.
_BUILTINS: dict[str, dict[str, tuple[str, str]]] = {
    "vision_encoder": {
        "tiny": ("vidtempo.models.encoders.presets:tiny_vision_encoder", "tiny random SigLIP tower (tests)"),
        "siglip": ("vidtempo.models.encoders.hf_vision:SiglipEncoder", "transformers SigLIP vision tower"),
        "clip": ("vidtempo.models.encoders.hf_vision:ClipEncoder", "transformers CLIP vision tower"),
        "dinov2": ("vidtempo.models.encoders.hf_vision:Dinov2Encoder", "transformers DINOv2 backbone"),
        "timm": ("vidtempo.models.encoders.timm_vision:TimmEncoder", "any timm ViT (EVA-CLIP included)"),
        "siglip_so400m": ("vidtempo.models.encoders.presets:siglip_so400m", "SigLIP-so400m-patch14-384"),
        "dinov2_giant": ("vidtempo.models.encoders.presets:dinov2_giant", "DINOv2-giant (patch 14)"),
        "clip_vit_l14": ("vidtempo.models.encoders.presets:clip_vit_l14", "CLIP ViT-L/14-336"),
        "eva02_clip_l": ("vidtempo.models.encoders.presets:eva02_clip_l", "timm EVA02-CLIP-L/14-336"),
        "concat": ("vidtempo.models.encoders.multi:ConcatEncoder", "several towers, grids resized and concatenated"),
        "pixels": ("vidtempo.models.encoders.pixels:PixelPatchEncoder", "raw pixel patches (no weights; baseline)"),
        "frame_cnn": ("vidtempo.models.encoders.cnn:FrameCNN", "small per-frame CNN trained from scratch"),
    },
    "audio_encoder": {
        "whisper": ("vidtempo.models.encoders.whisper:WhisperAudioEncoder", "transformers Whisper encoder"),
        "tiny": ("vidtempo.models.encoders.presets:tiny_audio_encoder", "tiny random Whisper encoder"),
        "mel_cnn": ("vidtempo.models.encoders.mel_cnn:MelCNN", "small log-mel + conv encoder trained from scratch"),
        "whisper_small": ("vidtempo.models.encoders.presets:whisper_small", "Whisper-small encoder"),
        "whisper_large_v3": ("vidtempo.models.encoders.presets:whisper_large_v3", "Whisper-large-v3 encoder"),
    },
    "compressor": {
        "pool": ("vidtempo.models.compressors.pooling:SpatialPoolCompressor", "LLaVA-style spatial pooling"),
        "tdc": ("vidtempo.models.compressors.tdc:TDCCompressor", "TDC static frame + Q-Former context"),
        "t_fuseformer": ("vidtempo.models.compressors.t_fuseformer:TFuseformerCompressor",
                         "DaMO dual-stream T-Fuseformer + Q-Former (with the stage-1 alignment heads)"),
    },
    "projector": {
        "mlp": ("vidtempo.models.projectors:MLPProjector", "Linear-GELU-Linear (LLaVA mlp2x_gelu)"),
        "linear": ("vidtempo.models.projectors:LinearProjector", "single linear layer"),
        "identity": ("vidtempo.models.projectors:IdentityProjector", "pass-through (compressor emits LLM width)"),
    },
    "llm": {
        "hf_causal_lm": ("vidtempo.models.llms.hf:HFCausalLM", "any transformers AutoModelForCausalLM"),
        "tiny": ("vidtempo.models.llms.presets:tiny_llm", "tiny random causal LM (qwen2/llama/mistral)"),
        "qwen2_7b_instruct": ("vidtempo.models.llms.presets:qwen2_7b_instruct", "Qwen/Qwen2-7B-Instruct"),
        "llama3_2_3b_instruct": (
            "vidtempo.models.llms.presets:llama3_2_3b_instruct",
            "meta-llama/Llama-3.2-3B-Instruct",
        ),
        "qwen2_5_vl": ("vidtempo.models.native.qwen2_5_vl:Qwen25VLBackbone", "native Qwen2.5-VL (video VLM) backbone"),
        "tiny_qwen2_5_vl": ("vidtempo.models.native.qwen2_5_vl:tiny_qwen2_5_vl", "tiny random Qwen2.5-VL"),
        "qwen2_5_vl_7b_instruct": (
            "vidtempo.models.native.qwen2_5_vl:qwen2_5_vl_7b_instruct",
            "Qwen/Qwen2.5-VL-7B-Instruct (8.3 B)",
        ),
        "mistral_7b_instruct": (
            "vidtempo.models.llms.presets:mistral_7b_instruct",
            "mistralai/Mistral-7B-Instruct-v0.3",
        ),
        "llava_next": ("vidtempo.models.llms.llava_next:LlavaNextLanguageModel", "the LLM of a LLaVA-NeXT directory"),
        "llava_v1_6_mistral_7b": (
            "vidtempo.models.llms.llava_next:llava_v1_6_mistral_7b",
            "llava-hf/llava-v1.6-mistral-7b-hf's language model (7.2 B)",
        ),
    },
    "tokenizer": {
        "tiny": ("vidtempo.models.tokenizers:tiny_tokenizer", "byte-level BPE trained locally (tests, CPU)"),
        "hf": ("vidtempo.models.tokenizers:load_tokenizer", "transformers AutoTokenizer, local files only"),
        "llava_next": ("vidtempo.models.llms.llava_next:llava_next_tokenizer", "LLaVA-NeXT tokenizer, [INST] template"),
        "tiny_qwen2_5_vl": (
            "vidtempo.models.native.qwen2_5_vl:tiny_qwen2_5_vl_tokenizer",
            "tiny BPE + Qwen2.5-VL vision special tokens",
        ),
    },
    "objective": {
        "sft": ("vidtempo.training.sft:SFTModule", "supervised fine-tuning (masked next-token CE)"),
        "dpo": ("vidtempo.training.dpo:DPOModule", "direct preference optimisation"),
        "align": ("vidtempo.training.align:AlignObjective", "DaMO stage-1 video-text alignment (VTC + VTM + VTG)"),
    },
    "dataset": {
        "conversation": ("vidtempo.data.datasets:ConversationDataset", "LLaVA/TDC conversations or messages"),
        "charades_sta": ("vidtempo.data.datasets:CharadesSTADataset", "Charades-STA grounding as QA"),
        "activitynet_captions": (
            "vidtempo.data.datasets:ActivityNetCaptionsDataset",
            "ActivityNet Captions grounding as QA",
        ),
        "msrvtt": ("vidtempo.data.datasets:MSRVTTDataset", "MSR-VTT retrieval pairs (CSV)"),
        "multiple_choice": ("vidtempo.data.datasets:MultipleChoiceDataset", "A-E multiple-choice QA"),
        "preference": ("vidtempo.data.datasets:PreferenceDataset", "chosen/rejected preference pairs"),
        "swift_preference": (
            "vidtempo.data.swift:SwiftPreferenceDataset",
            "ms-swift DPO records (rejected_response; TEMPLE's per-magnitude files)",
        ),
        "mixture": ("vidtempo.data.mixture:MixtureDataset", "several datasets drawn in proportion to weights"),
        "synth": ("vidtempo.synth.dataset:SynthConversations", "TempoSynth conversations (generated on first use)"),
        "synth_captions": ("vidtempo.synth.captions:SynthCaptions", "TempoSynth (video, caption) pairs (align)"),
        "synth_preference": (
            "vidtempo.synth.pairs:SynthPreferencePairs",
            "TEMPO-style pairs from TempoSynth dense captions (perturbed events or video)",
        ),
    },
    "target_builder": {
        "event_tags": ("vidtempo.data.targets:EventTags", "per-frame tags from meta.events (what is on screen)"),
        "synth_frame_slots": (
            "vidtempo.synth.targets:SynthFrameSlots",
            "TempoSynth's 13 per-frame moment / option / seen-so-far slots",
        ),
    },
    "aux_loss": {
        "saliency": ("vidtempo.training.auxiliary.frame_heads:SaliencyLoss", "per-frame saliency head on LLM states"),
        "frame_tags": ("vidtempo.training.auxiliary.frame_heads:FrameTagLoss", "per-frame tag head on LLM states"),
        "encoder_tags": (
            "vidtempo.training.auxiliary.encoder_tags:EncoderTagLoss",
            "per-frame tag head on the vision encoder's features",
        ),
    },
    "decoder": {
        "pyav": ("vidtempo.data.video:PyAVDecoder", "PyAV (bundled FFmpeg, default)"),
        "decord": ("vidtempo.data.video:DecordDecoder", "decord VideoReader"),
        "torchcodec": ("vidtempo.data.video:TorchCodecDecoder", "torchcodec VideoDecoder"),
    },
}


def get_registry(kind: str) -> Registry:
    """The alias table of one kind (``vision_encoder``, ``compressor``, ...)."""
    if kind not in _BUILTINS and kind not in _REGISTRIES:
        raise RegistryError(f"unknown component kind '{kind}'; valid kinds: {', '.join(kinds())}")
    if kind not in _REGISTRIES:
        reg = Registry(kind)
        for name, (target, doc) in _BUILTINS.get(kind, {}).items():
            reg.add(name, target, doc)
        _REGISTRIES[kind] = reg
    return _REGISTRIES[kind]


def kinds() -> list[str]:
    """Every component kind that has an alias table."""
    return sorted(set(_BUILTINS) | set(_REGISTRIES))


def resolve(key: str, kind: str | None = None) -> Callable[..., Any]:
    """Resolve ``key`` as an alias of ``kind`` (when given and known) or as a dotted path."""
    if kind is not None:
        return get_registry(kind).resolve(key)
    return import_target(key)
