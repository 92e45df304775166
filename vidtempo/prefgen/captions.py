"""Self-captioning for TEMPO / TEMPLE preference data: the model being trained describes its own clips.

TEMPLE (``docs/methods/prefgen.md``; lscpku/TEMPLE ``generate_meta_data.py``,
``inference/generator_base.py``) captions each merged segment with the target model (2 keyframes; the first
clip alone, every later one as a "difference caption" next to the previous clip), then asks the same model
to turn the ordered list of clip captions into one chronological paragraph (text only, no video; sampling
at temperature 0.7, repetition penalty 1.05). Rejected answers come from the same aggregation over a
perturbed list.

Here every model call goes through :class:`~vidtempo.data.collate.VideoCollator` (``generation=True``) and
``model.generate``; a clip is a :class:`~vidtempo.data.samples.ConversationSample` with ``start``/``end``.
Our VideoLLM takes one video per sample, so the previous clip is given as its *caption* (text context)
rather than as a second video (``caption_context: previous``; ``none`` = every clip captioned alone).
Frames inside a clip are sampled uniformly (``frames_per_clip``), not by TEMPLE's Laplacian sharpness.

Example:
    >>> postprocess_caption("Clip 2 shows a dog.\\n**Caption: \\"A dog runs into the room.\\"")
    'A dog runs into the room.'
    >>> aggregate_prompt(["A dog runs in.", "It sits."]).splitlines()[-1]
    '- Caption 2: It sits.'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vidtempo.data.samples import ConversationSample
from vidtempo.models.interfaces import VideoModel

log = logging.getLogger(__name__)

CONTEXTS = ("previous", "none")
AGGREGATES = ("model", "join")
CLIP_PROMPT = "Describe this video clip in detail."
CONTEXT_PROMPT = (
    'This clip comes right after an earlier clip of the same video, which was described as: "{previous}"\n'
    "Describe what is visible in this clip, say how it follows from the earlier one, and finish with a "
    "last line of the form 'Caption: ...' giving a detailed caption of this clip alone."
)
AGGREGATE_HEADER = (
    "Here are captions of consecutive clips cut from one video, listed in the order the clips were taken. "
    "Write a single detailed paragraph that narrates the whole video, telling the events in that order. "
    "Keep as many details as you can, write fluently and do not repeat yourself. "
    "Answer with the paragraph only."
)


@dataclass
class CaptionSettings:
    """Captioning and aggregation settings (recipe ``prefgen:`` keys; TEMPLE values by default).

    Attributes:
        frames_per_clip: frames sampled per clip (TEMPLE: 2 keyframes); None = the recipe's collator sampling.
        caption_context: ``previous`` (the previous clip's caption in the prompt) or ``none``.
        caption_max_new_tokens: clip caption budget (TEMPLE's wrapper default 2048).
        caption_do_sample: sample clip captions (TEMPLE keeps the checkpoint's near-greedy defaults: False).
        aggregate: ``model`` (the model writes the video description from the caption list, TEMPLE) or
            ``join`` (the captions joined in list order: deterministic, no model call).
        do_sample, temperature, repetition_penalty, max_new_tokens: aggregation generation (TEMPLE: True,
            0.7, 1.05, 8192).
        batch_size: prompts per ``generate`` call.
    """

    frames_per_clip: int | None = 2
    caption_context: str = "previous"
    caption_max_new_tokens: int = 2048
    caption_do_sample: bool = False
    aggregate: str = "model"
    do_sample: bool = True
    temperature: float = 0.7
    repetition_penalty: float = 1.05
    max_new_tokens: int = 8192
    batch_size: int = 8

    def check(self, where: str = "prefgen") -> None:
        """Raise ``ValueError`` naming the key when a value is invalid."""
        if self.caption_context not in CONTEXTS:
            raise ValueError(
                f"{where}.caption_context: expected one of {CONTEXTS}, got {self.caption_context!r}"
            )
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"{where}.aggregate: expected one of {AGGREGATES}, got {self.aggregate!r}")
        for key in ("caption_max_new_tokens", "max_new_tokens", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{where}.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        if self.frames_per_clip is not None and self.frames_per_clip < 1:
            raise ValueError(
                f"{where}.frames_per_clip: expected an integer >= 1 or null, got {self.frames_per_clip}"
            )
        if self.temperature <= 0:
            raise ValueError(f"{where}.temperature: expected > 0, got {self.temperature}")


def postprocess_caption(text: str) -> str:
    """Keep the last non-empty line; strip a leading ``Caption:`` label, markdown bold and wrapping quotes."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    line = line.strip("*").strip()
    line = re.sub(r"^(detailed\s+)?caption\s*:\s*", "", line, flags=re.IGNORECASE).strip("*").strip()
    if len(line) >= 2 and line[0] == line[-1] == '"':
        line = line[1:-1].strip()
    return line


def clip_prompt(previous: str | None) -> str:
    """The captioning instruction for one clip, with the previous clip's caption as context if given."""
    return CLIP_PROMPT if previous is None else CONTEXT_PROMPT.format(previous=previous)


def aggregate_prompt(captions: Sequence[str]) -> str:
    """The text-only prompt that turns a (possibly perturbed) list of clip captions into one description."""
    lines = "\n".join(f"- Caption {i}: {c}" for i, c in enumerate(captions, 1))
    return f"{AGGREGATE_HEADER}\n\n{lines}"


def join_captions(captions: Sequence[str]) -> str:
    """``aggregate: join``: the captions in list order, each ending with a full stop."""
    parts = [
        c.strip() if c.strip().endswith((".", "!", "?")) else f"{c.strip()}." for c in captions if c.strip()
    ]
    return " ".join(parts)


def drop_text_only_placeholders(batch: Any) -> Any:
    """A batch without frames, minus the one ``<video>`` placeholder per row the chat encoder inserted.

    The chat encoder gives every conversation's first user turn a placeholder, even a text-only one (the
    aggregation prompt). The composed ``VideoLLM`` splices zero video tokens there; the native Qwen2.5-VL
    backbone refuses a placeholder without frames. Removing it changes nothing for the former.
    """
    import dataclasses

    from vidtempo.data.chat import VIDEO_TOKEN_INDEX

    if batch.frames is not None or batch.features is not None:
        return batch
    keep = batch.input_ids != VIDEO_TOKEN_INDEX  # (B, L)
    if not bool((keep.sum(dim=1) == keep.shape[1] - 1).all()):
        return batch  # not exactly one placeholder per row: leave it to the model to judge
    b, n = keep.shape[0], keep.shape[1] - 1
    cut = {"input_ids": batch.input_ids[keep].view(b, n), "attention_mask": batch.attention_mask[keep].view(b, n)}
    if batch.labels is not None:
        cut["labels"] = batch.labels[keep].view(b, n)
    return dataclasses.replace(batch, **cut)


def generate_answers(
    model: VideoModel, tokenizer: Any, samples: list[ConversationSample], collate: Any, batch_size: int,
    transform: Callable[[Any], Any] | None = None, **kwargs: Any,
) -> list[str]:  # fmt: skip
    """One decoded, stripped answer per sample from ``model.generate`` (batches of ``batch_size``).

    ``transform`` edits each collated batch before generation (e.g. perturbs its frames in time).

    Raises:
        VideoDecodeError: a video cannot be decoded.
    """
    import torch

    from vidtempo.data.errors import VideoDecodeError

    device = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(samples), batch_size):
        batch = collate(samples[i : i + batch_size])
        if batch.skipped:
            raise VideoDecodeError(batch.skipped[0].path, batch.skipped[0].reason)
        batch = drop_text_only_placeholders(transform(batch) if transform is not None else batch)
        with torch.no_grad():
            new = model.generate(**batch.to(device).model_inputs(with_labels=False),
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 **kwargs)  # fmt: skip
        out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


class SelfCaptioner:
    """Captions clips and writes video descriptions with the model being trained.

    Args:
        model: a VideoLLM-like module: ``generate(**batch.model_inputs(with_labels=False), **kwargs)`` returns
            the new token ids (B, L_new).
        tokenizer: its tokenizer (chat template, ``batch_decode``).
        collator: the recipe's ``data.collator`` settings (frame size, backend, ...).
        settings: :class:`CaptionSettings`.

    Example:
        >>> captioner = SelfCaptioner(model, tok, {"frame_size": 32}, CaptionSettings())  # doctest: +SKIP
        >>> captioner.caption_clips("v.mp4", [(0.0, 2.0), (2.0, 4.0)])  # doctest: +SKIP
        ['A red square ...', 'The square ...']
    """

    def __init__(
        self, model: VideoModel, tokenizer: Any, collator: dict[str, Any], settings: CaptionSettings
    ) -> None:
        from vidtempo.data.collate import VideoCollator

        settings.check()
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        opts = {k: v for k, v in collator.items() if k not in ("generation", "feature_cache", "encoder_id")}
        if settings.frames_per_clip is not None:
            opts.update(num_frames=settings.frames_per_clip, fps=None)
        self.clip_collate = VideoCollator(tokenizer, **opts, generation=True)
        text_opts = {k: v for k, v in opts.items() if k in ("system_prompt", "max_text_tokens")}
        self.text_collate = VideoCollator(tokenizer, **text_opts, generation=True)

    def generate(self, samples: list[ConversationSample], collate: Any, **kwargs: Any) -> list[str]:
        """One decoded, stripped answer per sample (batched by ``batch_size``).

        Raises:
            VideoDecodeError: a clip cannot be decoded.
        """
        return generate_answers(self.model, self.tokenizer, samples, collate, self.settings.batch_size, **kwargs)

    def _clip_sample(
        self, video: str, bounds: tuple[float, float], previous: str | None, idx: int
    ) -> ConversationSample:
        return ConversationSample(video=video, messages=[{"role": "user", "content": clip_prompt(previous)}],
                                  start=float(bounds[0]), end=float(bounds[1]), id=f"clip{idx}")  # fmt: skip

    def caption_clips(self, video: str, bounds: Sequence[tuple[float, float]]) -> list[str]:
        """Captions of the clips ``[start, end)`` seconds of ``video``, in time order."""
        kwargs = {
            "max_new_tokens": self.settings.caption_max_new_tokens,
            "do_sample": self.settings.caption_do_sample,
        }
        if self.settings.caption_context == "none":
            samples = [self._clip_sample(video, b, None, i) for i, b in enumerate(bounds)]
            return [postprocess_caption(t) for t in self.generate(samples, self.clip_collate, **kwargs)]
        captions: list[str] = []
        for i, b in enumerate(bounds):  # sequential: each prompt holds the previous caption
            previous = captions[-1] if captions else None
            raw = self.generate([self._clip_sample(video, b, previous, i)], self.clip_collate, **kwargs)[0]
            captions.append(postprocess_caption(raw))
        return captions

    def describe(self, caption_lists: Sequence[Sequence[str]]) -> list[str]:
        """One video description per caption list (``aggregate: model``: a text-only model call each)."""
        if self.settings.aggregate == "join":
            return [join_captions(c) for c in caption_lists]
        s = self.settings
        samples = [ConversationSample(video=None, messages=[{"role": "user", "content": aggregate_prompt(c)}],
                                      id=f"describe{i}") for i, c in enumerate(caption_lists)]  # fmt: skip
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "do_sample": s.do_sample,
                                  "repetition_penalty": s.repetition_penalty}  # fmt: skip
        if s.do_sample:
            kwargs["temperature"] = s.temperature
        return self.generate(samples, self.text_collate, **kwargs)


__all__ = ["CaptionSettings", "SelfCaptioner", "aggregate_prompt", "clip_prompt", "drop_text_only_placeholders",
           "join_captions", "postprocess_caption"]  # fmt: skip
