"""Multiple choice by option likelihood: rank the options by the log-probability the model gives each one as
its answer, instead of generating free text and parsing it.

This is the "multiple_choice" protocol of lm-evaluation-harness and lmms-eval (the ``acc`` metric: the sum
of the answer tokens' log-probabilities, no length normalisation). Every answer is one of the options, so
an answer outside them (a generation naming something else) cannot happen; what is measured is whether the
right option is the model's most likely one. ``eval.mcq_scoring: likelihood`` turns it on; grounding items
are still generated. The answer form follows the training data: ``eval.mcq_answer: text`` scores the option's
text ("the red circle", TempoSynth's ``mcq_answers: text``), ``letter`` scores "B".

Each candidate is a training-style conversation (user prompt, assistant answer) collated without the
generation prompt, so the answer tokens are exactly the labelled tokens, the chat template's end-of-turn
included. All options of one item go into the same batch: the collator decodes the clip once and (with
``share_clips``, as :mod:`vidtempo.eval.likelihood` builds it) the model encodes it once for all its rows;
the time control permutes the clip once, the same for every option (its permutation depends on the item id
only).

Example:
    >>> from vidtempo.eval.benchmarks import EvalItem
    >>> item = EvalItem("q", "mcq", "v.mp4", "<video>\\nWhich?", "B", options=("A. the red circle", "B. a cat"))
    >>> option_answers(item, "text")
    [('A', 'the red circle'), ('B', 'a cat')]
    >>> [s.messages[-1]["content"] for s in option_samples(item, "letter")]
    ['A', 'B']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vidtempo.data.chat import IGNORE_INDEX
from vidtempo.data.samples import ConversationSample
from vidtempo.eval.benchmarks import EvalError, EvalItem
from vidtempo.models.interfaces import VideoModel

MCQ_SCORING = ("generate", "likelihood")
MCQ_ANSWER = ("letter", "text")


def option_answers(item: EvalItem, answer: str) -> list[tuple[str, str]]:
    """``[(letter, answer text)]`` for each option of ``item``: the letter itself or the option's text.

    Raises:
        EvalError: the item has no options, or an option is not written ``"X. text"``.
    """
    if not item.options:
        raise EvalError(f"item {item.id}: likelihood scoring needs the options (none given)")
    pairs = []
    for option in item.options:
        letter, sep, text = option.partition(". ")
        if not sep or len(letter) != 1 or not letter.isalpha():
            raise EvalError(f"item {item.id}: option {option!r} is not written 'X. text'")
        pairs.append((letter, letter if answer == "letter" else text.strip()))
    return pairs


def option_samples(item: EvalItem, answer: str) -> list[ConversationSample]:
    """One (prompt, answer) conversation per option, all with the item's id (the time control's key)."""
    base = item.sample()
    return [
        ConversationSample(video=base.video, id=base.id, meta=dict(base.meta),
                           messages=[*base.messages, {"role": "assistant", "content": text}])  # fmt: skip
        for _, text in option_answers(item, answer)
    ]


def answer_logprobs(logits: Any, labels: Any) -> Any:
    """(B,) summed log p(label) over each row's labelled positions: the sums DPO trains on
    (:func:`vidtempo.models.logprobs.sequence_logps`).

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> round(float(answer_logprobs(logits, torch.tensor([[-100, 1, 2]]))[0]), 4)  # 2 tokens x log(1/4)
        -2.7726
    """
    from vidtempo.models.logprobs import sequence_logps  # lazy: the runner imports no model code

    return sequence_logps(logits, labels, ignore_index=IGNORE_INDEX)[0]


def choice_batches(
    items: Sequence[EvalItem], answer: str, collate: Callable[[list[Any]], Any], batch_size: int
) -> Iterator[tuple[list[EvalItem], Any]]:
    """(items, collated batch of all their options) for every ``batch_size`` items."""
    for k in range(0, len(items), batch_size):
        chunk = list(items[k : k + batch_size])
        yield chunk, collate([s for item in chunk for s in option_samples(item, answer)])


def pick_options(model: VideoModel, chunk: Sequence[EvalItem], batch: Any, answer: str) -> dict[str, dict[str, Any]]:
    """Score one :func:`choice_batches` batch: ``{item id: {"raw", "option_logprobs"}}`` for the items whose
    clip decoded (``raw`` is the most likely option's answer text; ties go to the earlier option)."""
    import torch

    with torch.no_grad():
        out = model(**batch.model_inputs(with_labels=True))
    scores = answer_logprobs(out.logits, out.labels).tolist()  # (rows,)
    undecodable = {s.id for s in batch.skipped}
    result, row = {}, 0
    for item in chunk:
        pairs = option_answers(item, answer)
        if item.id in undecodable:
            continue
        values = scores[row : row + len(pairs)]
        row += len(pairs)
        best = max(range(len(pairs)), key=lambda j: (values[j], -j))
        result[item.id] = {"raw": pairs[best][1],
                           "option_logprobs": {letter: round(v, 4) for (letter, _), v in zip(pairs, values)}}  # fmt: skip
    if row != len(scores):
        raise EvalError(f"likelihood scoring: {len(scores)} scored rows for {row} options (batch mismatch)")
    return result


__all__ = [
    "MCQ_ANSWER",
    "MCQ_SCORING",
    "answer_logprobs",
    "choice_batches",
    "option_answers",
    "option_samples",
    "pick_options",
]
