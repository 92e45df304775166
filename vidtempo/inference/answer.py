"""Greedy answers of a loaded checkpoint for a batch of conversations: the code ``vidtempo infer`` and
``vidtempo serve`` share, so one video, prompt and setting gives one answer whichever way it is asked.

Frames, timestamps and prompt ids come from a ``VideoCollator`` built with the recipe's inference settings
(:func:`vidtempo.data.video_prompt.inference_collator_settings`, a request's ``fps`` / ``max_frames`` through
:func:`~vidtempo.data.video_prompt.with_sampling`), as in ``vidtempo eval``. A row's answer ends at the
tokenizer's end-of-sequence token or at its own token limit; rows of one batch may have different limits
(greedy decoding is prefix-consistent, so a shorter limit gives a prefix of the longer answer).

Example:
    >>> import torch
    >>> from vidtempo.models.build import build_video_llm
    >>> from vidtempo.models.tokenizers import tiny_tokenizer
    >>> model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
    ...                          "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})
    >>> answerer = Answerer(model.eval(), tiny_tokenizer(), {"num_frames": 4, "frame_size": 32})
    >>> sample = ConversationSample(video=None, messages=[{"role": "user", "content": "Hello?"}], id="q")
    >>> (out,) = answerer.answer([sample], max_new_tokens=3)
    >>> out.error is None and out.finish_reason in ("stop", "length") and len(out.token_ids) <= 3
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vidtempo.data.samples import ConversationSample
from vidtempo.data.video_prompt import sampling_key
from vidtempo.inference.lvcot import LVCoTResult, LVCoTSettings, run_lvcot
from vidtempo.inference.streaming import RowStreamer
from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX, VideoModel


@dataclass
class Answer:
    """One sample's answer.

    Attributes:
        text: the decoded answer, special tokens removed, stripped (what ``vidtempo infer`` prints).
        token_ids: the generated ids up to and including the end-of-sequence token (or the limit).
        finish_reason: ``stop`` (end-of-sequence) or ``length`` (the token limit).
        prompt_tokens: text tokens of the prompt plus the model's video tokens for its frames.
        num_frames: frames the model saw (0 without a video).
        trace: LVCoT's segment descriptions when LVCoT ran, else None.
        error: why the sample could not be answered (its video did not decode, ...), else None.
    """

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    num_frames: int = 0
    trace: LVCoTResult | None = None
    error: str | None = None


class Answerer:
    """A model in eval mode, its tokenizer and the collator settings it answers with.

    Args:
        model: a ``VideoModel`` (``generate`` returns only the new token ids).
        tokenizer: its tokenizer (``eos_token_id`` ends an answer).
        settings: ``VideoCollator`` keyword arguments (``generation=True`` is forced).
        device: where batches go (default: the model's device).

    Example: see the module docstring.
    """

    def __init__(self, model: VideoModel, tokenizer: Any, settings: dict[str, Any], device: Any = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.settings = {**settings, "generation": True}
        self.device = device if device is not None else next(model.parameters()).device
        self._collators: dict[tuple, Any] = {}

    def collator(self, settings: dict[str, Any] | None = None) -> Any:
        """The ``VideoCollator`` for ``settings`` (default: this answerer's), built once per distinct settings."""
        from vidtempo.data.collate import VideoCollator

        settings = {**(settings if settings is not None else self.settings), "generation": True}
        key = sampling_key(settings)
        if key not in self._collators:
            self._collators[key] = VideoCollator(self.tokenizer, **settings)
        return self._collators[key]

    def answer(
        self,
        samples: Sequence[ConversationSample],
        max_new_tokens: int | Sequence[int] = 64,
        *,
        settings: dict[str, Any] | None = None,
        lvcot: LVCoTSettings | None = None,
        on_ready: Callable[[dict[int, str]], None] | None = None,
        on_token: Callable[[int, int], None] | None = None,
    ) -> list[Answer]:
        """Greedy answers, one per sample, in order.

        Args:
            samples: conversations with unique ids (a final assistant turn is dropped).
            max_new_tokens: one limit for all, or one per sample.
            settings: collator settings for this batch (default: the answerer's).
            lvcot: describe the segments first (TDC's LVCoT) for every sample.
            on_ready: called once before generation with {sample index: error} of the samples that cannot
                be answered (the others are about to generate).
            on_token: called with (sample index, token id) for every generated token of a row until its
                end-of-sequence token or its limit (streaming).
        """
        import torch

        limits = [int(max_new_tokens)] * len(samples) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(limits) != len(samples):
            raise ValueError(f"{len(samples)} samples but {len(limits)} max_new_tokens values")
        collate = self.collator(settings)
        answers = [Answer() for _ in samples]
        convs = list(samples)
        if lvcot is not None:
            self._lvcot(convs, answers, collate, lvcot)
        index = {s.id: k for k, s in enumerate(convs)}
        if len(index) != len(convs):
            raise ValueError(f"answer needs unique sample ids, got {[s.id for s in convs]}")
        pending = [s for s, a in zip(convs, answers) if a.error is None]
        batch = collate(pending) if pending else None
        for skip in batch.skipped if batch is not None else []:
            answers[index[skip.id]].error = f"cannot decode {skip.path}: {skip.reason}"
        if on_ready is not None:
            on_ready({k: a.error for k, a in enumerate(answers) if a.error is not None})
        if batch is None or not len(batch):
            return answers
        rows = [index[i] for i in batch.ids]  # batch row -> sample index
        eos = self.tokenizer.eos_token_id
        generated: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)

        def take(row: int, token: int) -> None:
            k = rows[row]
            if done[row]:
                return
            generated[row].append(token)
            done[row] = token == eos or len(generated[row]) >= limits[k]
            if on_token is not None:
                on_token(k, token)

        with torch.no_grad():
            self.model.generate(**batch.to(self.device).model_inputs(with_labels=False),
                                max_new_tokens=max(limits[k] for k in rows), do_sample=False,
                                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos,
                                streamer=RowStreamer(take))  # fmt: skip
        for row, k in enumerate(rows):
            ids = generated[row]
            answers[k].token_ids = ids
            answers[k].text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            answers[k].finish_reason = "stop" if ids and ids[-1] == eos else "length"
            answers[k].num_frames = int(batch.frame_mask[row].sum()) if batch.frame_mask is not None else 0
            answers[k].prompt_tokens = self._prompt_tokens(batch, row, answers[k].num_frames)
        return answers

    def _lvcot(self, convs: list[ConversationSample], answers: list[Answer], collate: Any,
               settings: LVCoTSettings) -> None:  # fmt: skip
        """Replace each conversation by LVCoT's (descriptions in ``<think>``); a failed probe is an error."""
        traces = run_lvcot(self.model, self.tokenizer, collate, convs, settings)
        for k, trace in enumerate(traces):
            answers[k].trace = trace
            if trace.skipped:
                answers[k].error = f"cannot decode {convs[k].video}: {trace.skipped}"
            convs[k] = replace(convs[k], messages=trace.messages)

    def _prompt_tokens(self, batch: Any, row: int, num_frames: int) -> int:
        ids = batch.input_ids[row][batch.attention_mask[row].bool()]
        text = int((ids != VIDEO_TOKEN_INDEX).sum())
        return text + (int(self.model.video_tokens(num_frames)) if num_frames else 0)


def load_answerer(checkpoint: str, settings: dict[str, Any], device: str = "cpu") -> Answerer:
    """An :class:`Answerer` for a checkpoint directory (model in eval mode on ``device``).

    Raises:
        FileNotFoundError: the checkpoint has no tokenizer files.
    """
    from vidtempo.models.checkpoint import load_pretrained

    model, tokenizer, _ = load_pretrained(checkpoint)
    if tokenizer is None:
        raise FileNotFoundError(f"{checkpoint} has no tokenizer files")
    return Answerer(model.to(device).eval(), tokenizer, settings, device=device)
