"""Contracts that every pluggable model component satisfies (subclass these in research code).

* :class:`VideoModel`: a whole video language model (``VideoLLM``, the native ``Qwen25VLVideoModel``): what
  objectives, eval, inference, ``inspect`` and checkpoints rely on, with declared **capabilities**.
* :class:`VisionEncoder`, :class:`AudioEncoder`, :class:`TokenCompressor`: the parts ``VideoLLM`` composes.
* :class:`~vidtempo.data.inputs.VideoInputs` (re-exported here): the video side of every model call.

Dimension letters used in shape comments across vidtempo:
    B batch, T frames, P patches per frame, D feature width, N video tokens, L text tokens,
    S audio samples, A audio feature steps, H LLM hidden size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from vidtempo.data.inputs import VideoInputs, unit_pixels

__all__ = [
    "AudioEncoder", "AudioFeatures", "CAPABILITIES", "CompressorInput", "IGNORE_INDEX", "TokenCompressor",
    "TrainableParts", "VIDEO_TOKEN_INDEX", "VideoInputs", "VideoModel", "VideoModelOutput", "VideoTokens",
    "VisionEncoder",
]  # fmt: skip

VIDEO_TOKEN_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX convention: never a real vocabulary id
IGNORE_INDEX = -100

# What a model may declare it provides (``VideoModel.capabilities``); auxiliary losses and eval ask for them.
CAPABILITIES: dict[str, str] = {
    "hidden_states": "forward(return_hidden=True) fills out.hidden_states (embeddings + every block)",
    "frame_features": "forward puts the vision encoder's (B, T, P, D) features in out.info['frame_features']",
    "token_frames": "video tokens map to frames: out.info['token_frames'] (B, N), or an equal count per frame",
    "embed_video": "embed_video(video) -> (B, D) normalised video embeddings (retrieval)",
    "embed_text": "embed_text(texts) -> (B, D) normalised text embeddings (retrieval)",
    "embed_frames": "embed_frames(pixels (N, 3, H, W)) -> (N, D) one embedding per frame (frame selection)",
    "audio": "reads VideoInputs.audio",
    "cached_features": "accepts VideoInputs.features instead of frames",
    "packing": "forward(packing=N) runs the LLM on rows of <= N tokens, several samples per row, with the same loss",
}


@dataclass
class TrainableParts:
    """Which parts get gradients. ``llm`` may be ``"lora"`` (adapters only); a native model may allow
    ``"lora"`` for other parts too (``Qwen25VLVideoModel``: ``vision_encoder``)."""

    vision_encoder: bool | Literal["lora"] = False
    audio_encoder: bool = False
    compressor: bool = True
    projector: bool = True
    llm: bool | Literal["lora"] = False


@dataclass
class VideoModelOutput:
    """Forward result. ``labels``/``attention_mask`` are aligned with ``logits`` (after the video tokens are
    inserted).

    Attributes:
        loss: mean next-token CE over non-ignored labels (None without labels).
        logits: (B, L', V); None when the forward was asked for the loss only (``loss_head``).
        labels: (B, L') with video positions set to IGNORE_INDEX.
        attention_mask: (B, L').
        num_video_tokens: (B,) video tokens inserted per sample.
        info: diagnostics and capability outputs (``frame_features``, ``token_frames``, ``trimmed``, ...).
        last_hidden_state: (B, L', H) final-layer states, only with ``forward(return_hidden=True)``.
        hidden_states: the embeddings and every layer's output, each (B, L', H) (``hidden_states[-1]`` is
            ``last_hidden_state``); only with ``return_hidden=True``.
    """

    loss: torch.Tensor | None
    logits: torch.Tensor | None
    labels: torch.Tensor | None
    attention_mask: torch.Tensor
    num_video_tokens: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class VideoModel(nn.Module, ABC):
    """What a video language model offers the rest of vidtempo. Subclass it for a new model family.

    Required: :meth:`forward`, :meth:`generate`, :meth:`set_trainable`, :meth:`parameter_counts`,
    :attr:`hidden_size`, :meth:`video_tokens`, :attr:`frame_size`. Attributes every model has:
    ``trainable`` (:class:`TrainableParts`), ``lora`` (LoRA settings or None), ``base_modified`` (the LLM's
    own weights were trained or merged), ``max_length``, ``llm`` (with ``name_or_path`` and ``model``, the
    transformers module, peft-wrapped with LoRA).

    ``capabilities`` names what the model provides beyond that (keys of :data:`CAPABILITIES`); auxiliary
    losses declare what they need and the recipe fails at build time, naming the loss and the capability,
    when the model lacks it. A contract test checks that declared capabilities are provided.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    trainable: TrainableParts
    lora: Any
    max_length: int | None
    llm: Any

    @property
    def base_modified(self) -> bool:
        """Whether the weights an adapter-only checkpoint leaves out differ from their source: a stage trained
        them (``vidtempo.training.run`` marks it), an adapter was merged into them, or the current plan trains
        them (:meth:`trains_base`). A plan set at construction and replaced before any training marks nothing."""
        return bool(self.__dict__.get("_base_changed", False)) or (
            "trainable" in self.__dict__ and self.trains_base(self.trainable)
        )

    @base_modified.setter
    def base_modified(self, value: bool) -> None:
        self.__dict__["_base_changed"] = bool(value)

    def trains_base(self, plan: TrainableParts) -> bool:
        """Whether training under ``plan`` changes weights an adapter-only checkpoint leaves out (the LLM's)."""
        return plan.llm is True

    @abstractmethod
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
        video: VideoInputs | None = None, *, return_hidden: bool = False,
    ) -> VideoModelOutput:  # fmt: skip
        """Teacher-forced forward: input_ids (B, L) with at most one ``VIDEO_TOKEN_INDEX`` per row. A model that
        declares the ``packing`` capability also takes ``packing=N`` (rows of at most N tokens, the same loss)."""

    @abstractmethod
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, video: VideoInputs | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        """Greedy by default; returns only the new token ids (B, L_new)."""

    @abstractmethod
    def set_trainable(self, plan: TrainableParts) -> None:
        """Apply a freeze plan (wrapping the LLM with LoRA the first time a part is ``"lora"``)."""

    @abstractmethod
    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        """{part: (total, trainable)} parameter counts."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """H, the LLM's hidden size (the width of ``hidden_states``)."""

    @property
    @abstractmethod
    def frame_size(self) -> int:
        """Side of the square frame the model is nominally fed (``inspect``'s token count uses it)."""

    @abstractmethod
    def video_tokens(self, num_frames: int, audio: bool = False) -> int:
        """Video tokens for one clip of ``num_frames`` frames at :attr:`frame_size` (an upper bound when
        data-dependent)."""

    # ------------------------------------------------------------ shared behaviour
    @property
    def has_lora(self) -> bool:
        return any("lora_" in n for n, _ in self.llm.named_parameters())

    def merge_lora(self) -> None:
        """Fold the LoRA adapter into the weights and drop it (TEMPLE's stage hand-over)."""
        if not self.has_lora:
            raise ValueError("merge_lora: the model has no LoRA adapter")
        self.llm.model = self.llm.model.merge_and_unload()
        self.base_modified = True

    @property
    def frame_feature_dim(self) -> int:
        """D of ``info['frame_features']`` (capability ``frame_features``)."""
        raise NotImplementedError(f"{type(self).__name__} does not provide frame_features")

    def text_tokenizer(self) -> Any:
        """The tokenizer of a part that reads text itself (a query-aware compressor), saved with checkpoints;
        None when no part does."""
        return None

    def set_text_tokenizer(self, tokenizer: Any) -> None:
        """Give the text-reading part the tokenizer a checkpoint was trained with."""

    def embed_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D), one embedding per frame (capability ``embed_frames``)."""
        raise NotImplementedError(f"{type(self).__name__} does not provide embed_frames")

    def embed_video(self, video: VideoInputs) -> torch.Tensor:
        """(B, D) L2-normalised video embeddings (capability ``embed_video``)."""
        raise NotImplementedError(f"{type(self).__name__} does not provide embed_video")

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """(B, D) L2-normalised text embeddings (capability ``embed_text``)."""
        raise NotImplementedError(f"{type(self).__name__} does not provide embed_text")

    def missing_capabilities(self, needed: set[str] | frozenset[str]) -> list[str]:
        """The capabilities of ``needed`` this model does not declare, sorted."""
        return sorted(set(needed) - set(self.capabilities))


@dataclass
class AudioFeatures:
    """Audio encoder output.

    Attributes:
        feats: (B, A, D) features.
        times: (B, A) centre time of each step in seconds (relative to the clip start).
        mask: (B, A) bool, True = valid step (False for padding or a video with no audio track).
    """

    feats: torch.Tensor
    times: torch.Tensor
    mask: torch.Tensor


@dataclass
class CompressorInput:
    """Everything a compressor may use to turn per-frame features into video tokens.

    Attributes:
        feats: (B, T, P, D) per-frame patch features from the vision encoder.
        frame_mask: (B, T) bool, True = real frame (False = padding).
        timestamps: (B, T) presentation time of each frame in seconds.
        grid: (h, w) patch grid of one frame, ``h * w == P``.
        audio: optional audio features of the same videos.
        query: optional text query per video (e.g. the first user turn), for query-aware compressors.
    """

    feats: torch.Tensor
    frame_mask: torch.Tensor
    timestamps: torch.Tensor
    grid: tuple[int, int]
    audio: AudioFeatures | None = None
    query: list[str] | None = None


@dataclass
class VideoTokens:
    """Variable-length video token sequences, right-padded to the longest in the batch.

    Attributes:
        tokens: (B, N, D_out) tokens.
        mask: (B, N) bool, True = valid token.
        info: optional per-call diagnostics (e.g. tokens trimmed by a budget guard).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    info: dict | None = None


class VisionEncoder(nn.Module, ABC):
    """Per-frame image encoder. Owns its own resizing and normalisation.

    Subclasses set ``out_dim`` (feature width D) and ``image_size`` and implement :meth:`encode`.
    """

    out_dim: int
    image_size: int

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixels: (N, 3, H, W) uint8 0-255 or float in [0, 1] -> ((N, P, D) patch features, (h, w) patch grid)."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.encode(pixels)

    def preprocess(self, pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        """Resize (N, 3, H, W) uint8 0-255 or float in [0, 1] to ``image_size`` and normalise with ``mean``/``std``
        (fp32 math for uint8 input, on the frames' device)."""
        pixels = unit_pixels(pixels)
        size = self.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        mean_t = pixels.new_tensor(mean).view(1, 3, 1, 1)
        std_t = pixels.new_tensor(std).view(1, 3, 1, 1)
        return (pixels - mean_t) / std_t


class AudioEncoder(nn.Module, ABC):
    """Waveform encoder. Owns its own feature extraction (e.g. log-mel)."""

    out_dim: int
    sample_rate: int = 16000

    @abstractmethod
    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> AudioFeatures:
        """waveform: (B, S) float mono at ``sample_rate``; lengths: (B,) valid samples per row."""


class TokenCompressor(nn.Module, ABC):
    """Turns per-frame features (+ time, + audio, + text query) into a video token sequence.

    Subclasses set ``out_dim`` (the width of the tokens they emit).
    """

    out_dim: int

    @abstractmethod
    def forward(self, inputs: CompressorInput) -> VideoTokens:
        """Compress ``inputs.feats`` (B, T, P, D) to (B, N, out_dim) tokens."""

    def num_tokens(self, num_frames: int, grid: tuple[int, int], audio: bool = False) -> int:
        """Tokens emitted for one video of ``num_frames`` frames (upper bound when data-dependent)."""
        raise NotImplementedError(f"{type(self).__name__} does not report a token count")
