"""Collation of preference pairs: one batch holding a chosen side and a rejected side.

Each side is an ordinary :class:`~vidtempo.data.collate.VideoTextBatch` (prompt + answer, labels on the
final answer only), so the model runs on it unchanged. The rejected side shows ``rejected_video`` when the
pair sets it (an *input-side* pair: the rejected answer is scored on its own, e.g. perturbed, video),
otherwise the chosen side's video (decoded once, shared). A pair whose chosen or rejected video cannot be
decoded is left out whole and recorded in ``batch.skipped`` (logged by the objective's skip tracker). An
over-long side follows ``data.overlong`` (``vidtempo.data.overlong``): ``error`` stops, ``skip`` and
``truncate`` leave the pair out (a cut answer would change what the pair prefers).

Example:
    >>> from vidtempo.models.tokenizers import tiny_tokenizer
    >>> from vidtempo.data.samples import PreferenceSample
    >>> collate = PreferenceCollator(tiny_tokenizer(), num_frames=4, frame_size=32)
    >>> pair = PreferenceSample(video=None, prompt=[{"role": "user", "content": "Order?"}],
    ...                         chosen="red then blue", rejected="blue then red")
    >>> batch = collate([pair])
    >>> len(batch), batch.chosen.input_ids.shape[0], batch.rejected.frames is None
    (1, 1, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from vidtempo.data.chat import IGNORE_INDEX
from vidtempo.data.collate import DecodedVideo, SkipRecord, VideoCollator, VideoTextBatch
from vidtempo.data.errors import VideoDecodeError
from vidtempo.data.samples import ConversationSample, PreferenceSample

REF_CHOSEN_KEY = "ref_chosen_logps"  # PreferenceSample.meta keys of precomputed reference log-probs
REF_REJECTED_KEY = "ref_rejected_logps"


@dataclass
class PreferenceBatch:
    """B preference pairs that decoded.

    Attributes:
        chosen: prompt + chosen answer, (B, L_c) text and (B, T, 3, H, W) frames; labels on the answer only.
        rejected: prompt + rejected answer, (B, L_r) text; frames of ``rejected_video`` for input-side pairs.
        input_side: (B,) bool, True where the rejected side has its own video.
        ref_chosen_logps: (B,) float32 precomputed reference log-probs (from the pairs' meta) or None
            when any pair of the batch lacks them.
        ref_rejected_logps: (B,) float32, same for the rejected answers.
        ids: pair ids. meta: the pairs' meta dicts. skipped: pairs left out (undecodable video).
    """

    chosen: VideoTextBatch
    rejected: VideoTextBatch
    input_side: torch.Tensor
    ref_chosen_logps: torch.Tensor | None = None
    ref_rejected_logps: torch.Tensor | None = None
    ids: list[str] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[SkipRecord] = field(default_factory=list)

    fp32_fields: ClassVar[tuple[str, ...]] = ("ref_chosen_logps", "ref_rejected_logps")  # summed log-probs

    def __len__(self) -> int:
        return len(self.chosen)

    def pin_memory(self) -> PreferenceBatch:
        """A copy in page-locked memory (``DataLoader(pin_memory=True)``)."""
        pin = lambda t: t.pin_memory() if isinstance(t, torch.Tensor) else t  # noqa: E731
        return dataclasses.replace(self, chosen=self.chosen.pin_memory(), rejected=self.rejected.pin_memory(),
                                   input_side=pin(self.input_side), ref_chosen_logps=pin(self.ref_chosen_logps),
                                   ref_rejected_logps=pin(self.ref_rejected_logps))  # fmt: skip

    def to(self, device: torch.device | str) -> PreferenceBatch:
        """A copy with every tensor on ``device`` (what Lightning calls to move a batch)."""
        move = lambda t: t.to(device, non_blocking=t.is_pinned()) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return PreferenceBatch(
            chosen=self.chosen.to(device), rejected=self.rejected.to(device),
            input_side=move(self.input_side), ref_chosen_logps=move(self.ref_chosen_logps),
            ref_rejected_logps=move(self.ref_rejected_logps),
            ids=self.ids, meta=self.meta, skipped=self.skipped,
        )  # fmt: skip


def answer_only_labels(prompt_ids: list[int], ids: list[int], labels: list[int], sample_id: str) -> list[int]:
    """Keep the labels of the final answer only: everything inside the prompt becomes ``IGNORE_INDEX``.

    Earlier assistant turns of a multi-turn prompt are context, not part of the preference.
    """
    n = len(prompt_ids)
    if ids[:n] != prompt_ids:
        raise ValueError(
            f"pair '{sample_id}': the tokenised prompt is not a prefix of prompt + answer; "
            "the chat template must render the prompt the same way with and without the answer"
        )
    return [IGNORE_INDEX] * n + labels[n:]


class PreferenceCollator(VideoCollator):
    """Decode + tokenise + pad preference pairs into a :class:`PreferenceBatch`.

    Takes the same arguments as :class:`~vidtempo.data.collate.VideoCollator` (a recipe's ``data.collator``
    section works for both); ``generation`` must stay False.

    Example:
        >>> from vidtempo.models.tokenizers import tiny_tokenizer
        >>> collate = PreferenceCollator(tiny_tokenizer(), num_frames=8, frame_size=32)
        >>> collate.num_frames
        8
    """

    def __init__(self, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(tokenizer, **kwargs)
        if self.generation:
            raise ValueError(
                "PreferenceCollator: data.collator.generation must be false for preference pairs"
            )

    def _decode_pair(self, pair: PreferenceSample) -> tuple[DecodedVideo | None, DecodedVideo | None]:
        """(chosen video, rejected video); raises VideoDecodeError for either."""
        chosen = self.decode(_side(pair, pair.video, pair.chosen, "chosen")) if pair.video else None
        if pair.rejected_video is None:
            return chosen, chosen
        return chosen, self.decode(_side(pair, pair.rejected_video, pair.rejected, "rejected"))

    def _encode(self, pair: PreferenceSample, answer: str) -> tuple[list[int], list[int]]:
        prompt_ids, _ = self.chat.encode(pair.prompt, generation_prompt=True, sample_id=pair.id)
        messages = [*pair.prompt, {"role": "assistant", "content": answer}]
        ids, labels = self.chat.encode(messages, sample_id=pair.id)
        return ids, answer_only_labels(prompt_ids, ids, labels, pair.id)

    def _overlong(self, pair: PreferenceSample, tokens: tuple[list[int], list[int]], which: str) -> str | None:
        """Why one side is too long (None = it fits); raises ``OverlongError`` under ``data.overlong: error``."""
        record = f"pair '{pair.id}' ({which})" + (f" of {pair.meta['source']}" if pair.meta.get("source") else "")
        policy = "skip" if self.limit.policy == "truncate" else self.limit.policy  # a cut answer is another pair
        fitted = dataclasses.replace(self.limit, policy=policy).fit(*tokens, has_video=pair.video is not None,
                                                                    record=record)  # fmt: skip
        return fitted.reason

    def __call__(self, samples: list[Any]) -> PreferenceBatch:  # type: ignore[override]
        chosen_rows: list[tuple[ConversationSample, DecodedVideo | None, list[int], list[int]]] = []
        rejected_rows: list[tuple[ConversationSample, DecodedVideo | None, list[int], list[int]]] = []
        pairs: list[PreferenceSample] = []
        skipped: list[SkipRecord] = []
        for raw in samples:
            pair = _as_pair(raw)
            try:
                chosen_video, rejected_video = self._decode_pair(pair)
            except VideoDecodeError as err:  # logged once by the objective's skip tracker
                skipped.append(SkipRecord(pair.id, err.path, err.reason))
                continue
            chosen = self._encode(pair, pair.chosen)
            rejected = self._encode(pair, pair.rejected)
            reason = self._overlong(pair, chosen, "chosen") or self._overlong(pair, rejected, "rejected")
            if reason is not None:
                skipped.append(SkipRecord(pair.id, pair.video or "", f"over-long: {reason}"))
                continue
            chosen_rows.append((_side(pair, pair.video, pair.chosen, "chosen"), chosen_video, *chosen))
            rejected_src = pair.rejected_video or pair.video
            rejected_rows.append((_side(pair, rejected_src, pair.rejected, "rejected"), rejected_video, *rejected))
            pairs.append(pair)
        return PreferenceBatch(
            chosen=self._pad(chosen_rows, []),
            rejected=self._pad(rejected_rows, []),
            input_side=torch.tensor([p.rejected_video is not None for p in pairs], dtype=torch.bool),
            ref_chosen_logps=_reference(pairs, REF_CHOSEN_KEY),
            ref_rejected_logps=_reference(pairs, REF_REJECTED_KEY),
            ids=[p.id for p in pairs],
            meta=[p.meta for p in pairs],
            skipped=skipped,
        )


def _as_pair(sample: Any) -> PreferenceSample:
    if not isinstance(sample, PreferenceSample):
        raise TypeError(
            f"PreferenceCollator got a {type(sample).__name__}; expected PreferenceSample "
            "(use a preference dataset, e.g. data.train: {_target_: preference, path: pairs.jsonl})"
        )
    return sample


def _side(pair: PreferenceSample, video: str | None, answer: str, which: str) -> ConversationSample:
    """One side of a pair as a conversation (what the base collator decodes and pads)."""
    return ConversationSample(
        video=video, messages=[*pair.prompt, {"role": "assistant", "content": answer}],
        id=pair.id, meta={**pair.meta, "preference": which},
    )  # fmt: skip


def _reference(pairs: list[PreferenceSample], key: str) -> torch.Tensor | None:
    """(B,) float32 of ``meta[key]`` when every pair has it, else None."""
    if not pairs or any(key not in p.meta for p in pairs):
        return None
    try:
        return torch.tensor([float(p.meta[key]) for p in pairs], dtype=torch.float32)
    except (TypeError, ValueError) as err:
        bad = next(p for p in pairs if not isinstance(p.meta[key], (int, float)))
        raise ValueError(f"pair '{bad.id}': meta '{key}' must be a number, got {bad.meta[key]!r}") from err
