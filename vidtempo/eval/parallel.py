"""``eval.processes: N``: the evaluation's batches shared among N CPU processes, with the rows one process writes.

Each process is forked from this one, loads the checkpoint, runs one intra-op thread and takes every N-th
batch of each condition's generated items and of its likelihood-scored items
(:func:`vidtempo.eval.generation.share_of`): the batches are the ones a single process forms, and the time
control's permutations depend only on the item id, so the rows are the same (the order of the lines in
``generations.jsonl`` is not). This process appends the rows as they arrive (a crash leaves a resumable log)
and shows the progress. On a 2-core CPU, two single-threaded processes score the demo's 1800 rows faster than
one process with two threads (``docs/evaluation.md``, "Processes").

A process that raises or dies stops the others; the error names the process and what it raised.

Example:
    >>> fork_context().get_start_method()
    'fork'
"""

from __future__ import annotations

import multiprocessing
import queue as queue_lib
import traceback
from collections.abc import Sequence
from typing import Any

from vidtempo.eval.benchmarks import EvalError
from vidtempo.eval.generation import Job, generate_rows, torch_device
from vidtempo.eval.generation_log import GenerationLog
from vidtempo.eval.settings import EvalSettings
from vidtempo.utils.progress import progress_bar

POLL_S = 1.0  # how often the parent checks that every process is alive while it waits for rows
LAST_WORD_S = 5.0  # how long a process that has exited may take to deliver its last message


def fork_context() -> Any:
    """The ``fork`` multiprocessing context (the processes inherit the imported modules: no re-import)."""
    return multiprocessing.get_context("fork")


def run_parallel(jobs: Sequence[Job], benchmark: str, checkpoint: str, settings: EvalSettings,
                 out_log: GenerationLog, *, progress: bool = True) -> int:  # fmt: skip
    """Run :func:`vidtempo.eval.generation.generate_rows` in ``settings.processes`` forked processes and append
    their rows to ``out_log``; returns the number of rows written.

    Raises:
        EvalError: a device other than the CPU, or a process that failed (its traceback's last line).
    """
    count = settings.processes
    if torch_device(settings.device).type != "cpu":
        raise EvalError(f"eval.processes: {count} processes run on the CPU only (eval.device is "
                        f"{settings.device!r}); set eval.processes: 1 for an accelerator")  # fmt: skip
    ctx = fork_context()
    rows_queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(k, count, jobs, benchmark, checkpoint, settings, rows_queue),
                         name=f"vidtempo-eval-{k}") for k in range(count)]  # fmt: skip
    for proc in procs:
        proc.start()
    written, running = 0, set(range(count))
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"eval {benchmark}", total=sum(len(j.items) for j in jobs), note="")
            while running:
                message = _next_message(rows_queue, procs, running)
                if message is None:
                    continue
                kind, k, payload = message
                if kind == "error":
                    raise EvalError(f"eval process {k} of {count} failed: {payload}")
                if kind == "done":
                    running.discard(k)
                    continue
                rows, note = payload
                out_log.append(rows)
                written += len(rows)
                bar.update(task, advance=len(rows), note=note)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
    return written


def _next_message(rows_queue: Any, procs: list[Any], running: set[int]) -> tuple[str, int, Any] | None:
    """The next message, or None after ``POLL_S`` without one; a running process that has exited without
    saying it was done raises :class:`EvalError`."""
    try:
        return rows_queue.get(timeout=POLL_S)
    except queue_lib.Empty:
        pass
    exited = [k for k in sorted(running) if procs[k].exitcode is not None]
    if not exited:
        return None
    try:  # a process flushes its messages before it exits: its last one may have come just now
        return rows_queue.get(timeout=LAST_WORD_S)
    except queue_lib.Empty:
        k = exited[0]
        raise EvalError(f"eval process {k} of {len(procs)} exited with code {procs[k].exitcode} before finishing "
                        "(killed for memory?); re-run to resume from the rows written") from None  # fmt: skip


def _child(k: int, count: int, jobs: Sequence[Job], benchmark: str, checkpoint: str, settings: EvalSettings,
           rows_queue: Any) -> None:  # fmt: skip
    """One process: its share of the batches, one intra-op thread (the processes share the cores). Not a
    daemon (its DataLoader starts workers), so it ends itself when this process is gone."""
    import os

    import torch

    from vidtempo.utils.processes import die_with_parent

    die_with_parent(os.getppid())
    torch.set_num_threads(1)
    try:
        for rows, note in generate_rows(jobs, benchmark, checkpoint, settings, share=(k, count)):
            rows_queue.put(("rows", k, (rows, note)))
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        rows_queue.put(("error", k, last))
        return
    rows_queue.put(("done", k, None))
