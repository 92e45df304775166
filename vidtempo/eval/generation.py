"""Batched greedy generation for ``vidtempo eval``: load the checkpoint, collate every pending item of every
condition (through the condition's control collator, or LVCoT's segment descriptions first), generate, and
append the scored rows to the :class:`~vidtempo.eval.generation_log.GenerationLog` batch by batch.

Multiple-choice items go to :func:`vidtempo.eval.likelihood.likelihood_rows` instead when
``eval.mcq_scoring`` is ``likelihood``.

Example:
    >>> job = Job("normal", [])
    >>> job.condition, torch_device("cpu").type
    ('normal', 'cpu')
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from vidtempo.eval.benchmarks import EvalError, EvalItem
from vidtempo.eval.controls import ControlledCollator
from vidtempo.eval.generation_log import GenerationLog, item_row, permutation_meta, skipped_rows
from vidtempo.eval.likelihood import likelihood_rows
from vidtempo.eval.settings import EvalSettings
from vidtempo.models.interfaces import VideoModel
from vidtempo.utils.progress import progress_bar

T = TypeVar("T")


def generate_texts(model: VideoModel, tokenizer: Any, batch: Any, max_new_tokens: int) -> list[str]:
    """Greedy answers for one collated batch, decoded and stripped (one string per row of ``batch``)."""
    import torch

    with torch.no_grad():
        new = model.generate(**batch.model_inputs(with_labels=False), max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             do_sample=False)  # fmt: skip
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def load_model(checkpoint: str, device: Any) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, tokenizer) from a checkpoint directory."""
    from vidtempo.models.checkpoint import load_pretrained

    model, tokenizer, _ = load_pretrained(checkpoint)
    if tokenizer is None:
        raise EvalError(f"{checkpoint}: the checkpoint has no tokenizer files (tokenizer_config.json)")
    return model.to(device).eval(), tokenizer


def torch_device(name: str) -> Any:
    """``torch.device`` of ``eval.device`` (``auto``: cuda when available, else cpu)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Job:
    """The items still to answer under one condition (``normal``, ``time``, ``blind``)."""

    condition: str
    items: list[EvalItem]


def run_generation(
    jobs: Sequence[Job],
    benchmark: str,
    checkpoint: str,
    settings: EvalSettings,
    out_log: GenerationLog,
    *,
    progress: bool = True,
) -> int:
    """Generate every pending item of every job (condition) in this process; rows go to ``out_log`` batch by
    batch. (``eval.processes`` > 1: :func:`vidtempo.eval.parallel.run_parallel` shares the batches among CPU
    processes, with the same rows.)

    Returns:
        The number of rows written.
    """
    written = 0
    with progress_bar(progress) as bar:
        task = bar.add_task(f"eval {benchmark}", total=sum(len(j.items) for j in jobs), note="")
        for rows, note in generate_rows(jobs, benchmark, checkpoint, settings):
            out_log.append(rows)
            written += len(rows)
            bar.update(task, advance=len(rows), note=note)
    return written


def generate_rows(
    jobs: Sequence[Job], benchmark: str, checkpoint: str, settings: EvalSettings, share: tuple[int, int] = (0, 1)
) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """(rows, progress note) per batch of every job: generated items first, then those scored by likelihood.

    ``share = (k, n)``: only the batches whose index is k modulo n (of each job's generated items and of its
    likelihood items), the same batches a single process forms, so n processes together write the rows one
    process writes (:func:`share_of`).
    """
    from torch.utils.data import DataLoader

    from vidtempo.data.collate import VideoCollator

    dev = torch_device(settings.device)
    model, tokenizer = load_model(checkpoint, dev)
    collate = VideoCollator(tokenizer, **settings.collator)
    for job in jobs:
        by_id = {i.id: i for i in job.items}
        controlled = ControlledCollator(collate, job.condition, settings.control_seed)
        by_likelihood = {i.id for i in job.items if settings.mcq_scoring == "likelihood" and i.kind == "mcq"}
        scored = share_of([i for i in job.items if i.id in by_likelihood], settings.batch_size, share)
        samples = share_of([i.sample() for i in job.items if i.id not in by_likelihood], settings.batch_size, share)
        if settings.lvcot is not None:  # segment descriptions need the model: batches built here
            batches = lvcot_batches(model, tokenizer, controlled, samples, settings)
        else:
            loader = DataLoader(samples, batch_size=settings.batch_size, shuffle=False,
                                num_workers=settings.num_workers, collate_fn=controlled)  # fmt: skip
            batches = ((b, {}) for b in loader)
        for batch, extras in batches:
            texts = generate_texts(model, tokenizer, batch.to(dev), settings.max_new_tokens) if len(batch) else []
            rows = [
                item_row(by_id[i], job.condition, benchmark, t, extra={**permutation_meta(meta), **extras.get(i, {})})
                for i, t, meta in zip(batch.ids, texts, batch.meta)
            ]
            yield rows + skipped_rows(batch.skipped, by_id, job.condition, benchmark, extras), job.condition
        for rows in likelihood_rows(model, tokenizer, scored, job.condition, benchmark, settings, dev):
            yield rows, f"{job.condition} (likelihood)"


def share_of(items: list[T], batch_size: int, share: tuple[int, int]) -> list[T]:
    """The items of the batches (``batch_size`` consecutive items each) whose index is ``k`` modulo ``n``, in
    order, for ``share = (k, n)``; batching the result again gives exactly those batches.

    Example:
        >>> share_of(list(range(7)), 2, (1, 2))
        [2, 3, 6]
    """
    k, n = share
    if not 0 <= k < n:
        raise ValueError(f"share {share}: expected (k, n) with 0 <= k < n")
    return [x for b in range(k * batch_size, len(items), n * batch_size) for x in items[b : b + batch_size]]


def lvcot_batches(
    model: VideoModel, tokenizer: Any, collate: Any, samples: list[Any], settings: EvalSettings
) -> Iterable[tuple[Any, dict[str, dict[str, Any]]]]:
    """(final batch, {item id: {"lvcot": record}}) per ``batch_size`` items: LVCoT runs on the segments
    (through the same control collator, so controls reach the descriptions too), then the answers' batch."""
    from dataclasses import replace

    from vidtempo.inference.lvcot import run_lvcot

    for k in range(0, len(samples), settings.batch_size):
        chunk = samples[k : k + settings.batch_size]
        results = run_lvcot(model, tokenizer, collate, chunk, settings.lvcot, batch_size=settings.batch_size)
        final = [replace(s, messages=r.messages) for s, r in zip(chunk, results)]
        yield collate(final), {s.id: {"lvcot": r.record()} for s, r in zip(chunk, results)}
