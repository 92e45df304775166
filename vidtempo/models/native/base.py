"""The model contract the objectives, ``inspect``, checkpoints and eval rely on, as a ``Protocol``.

Both the composed :class:`~vidtempo.models.video_llm.VideoLLM` and the native backbones in this package
satisfy it; nothing here imports model code.

Example:
    >>> from vidtempo.models.native.base import VideoModel, parts_report
    >>> parts_report({"llm": (10, 2), "projector": (4, 0)})
    'llm 10 (2 trainable), projector 4 (0 trainable)'
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class VideoModel(Protocol):
    """What a video language model offers the rest of vidtempo.

    * ``forward(input_ids, attention_mask, labels, frames, frame_mask, timestamps, audio, audio_lengths,
      queries, features, grid)`` -> ``VideoLLMOutput`` whose ``labels`` / ``attention_mask`` are aligned with
      ``logits`` (the placeholder ``-200`` expanded to the model's video tokens).
    * ``generate(...)`` -> only the new token ids (B, L_new).
    * ``set_trainable(TrainableParts)``, ``trainable``, ``lora``, ``has_lora``, ``merge_lora()``,
      ``base_modified``, ``parameter_counts()``.
    * ``llm.name_or_path``, ``llm.model`` (peft-wrapped with LoRA), ``llm.load_pretrained(path)``.
    * ``vision_encoder.image_size`` / ``vision_encoder.encode(pixels)`` and ``compressor.num_tokens(frames,
      grid, audio)`` for ``vidtempo inspect``; ``audio_encoder`` (None when absent) and ``max_length``.
    """

    trainable: Any
    lora: Any
    base_modified: bool
    max_length: int | None
    llm: Any

    def set_trainable(self, plan: Any) -> None: ...

    def merge_lora(self) -> None: ...

    @property
    def has_lora(self) -> bool: ...

    def parameter_counts(self) -> dict[str, tuple[int, int]]: ...

    def generate(self, input_ids: Any, attention_mask: Any, **kwargs: Any) -> Any: ...


def parts_report(counts: dict[str, tuple[int, int]]) -> str:
    """One line from :meth:`VideoModel.parameter_counts` (logs and error messages)."""
    return ", ".join(f"{part} {total} ({trainable} trainable)" for part, (total, trainable) in counts.items())
