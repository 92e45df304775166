"""The request queue and the one thread that runs the model.

Handlers :meth:`Batcher.submit` a :class:`Job`; the worker takes the first waiting job, waits up to
``max_wait_s`` for more (up to ``max_batch``), splits them into groups that share collator settings and LVCoT
settings, and answers each group with one batched ``generate`` (:class:`vidtempo.inference.answer.Answerer`).
Each job receives events through its ``emit`` callback, in order:

* ``("start",)`` once its video decoded and generation begins, or ``("error", RequestError)`` instead;
* ``("delta", text)`` for streamed text (streaming jobs only);
* ``("done", Answer)`` at the end (or ``("error", RequestError)`` if generation itself fails).

A group that fails before generation (e.g. one over-long prompt) is retried request by request, so one bad
request does not fail the others. The worker survives any exception.

Example:
    >>> import torch
    >>> from vidtempo.inference.answer import Answerer
    >>> from vidtempo.models.build import build_video_llm
    >>> from vidtempo.models.tokenizers import tiny_tokenizer
    >>> model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
    ...                          "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})
    >>> batcher = Batcher(Answerer(model.eval(), tiny_tokenizer(), {}), max_batch=4).start()
    >>> events = []
    >>> job = Job(ConversationSample(None, [{"role": "user", "content": "Hi"}]), {}, 2, emit=events.append)
    >>> batcher.submit(job); batcher.close(); [e[0] for e in events]
    ['start', 'done']
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from vidtempo.data.overlong import OverlongError
from vidtempo.data.samples import ConversationSample
from vidtempo.data.video_prompt import sampling_key
from vidtempo.inference.answer import Answerer
from vidtempo.inference.lvcot import LVCoTSettings
from vidtempo.inference.streaming import IncrementalText
from vidtempo.serving.requests import RequestError

log = logging.getLogger(__name__)
_ids = itertools.count()


@dataclass
class Job:
    """One request for the worker.

    Attributes:
        sample: the conversation (its id is made unique on submit).
        settings: ``VideoCollator`` settings for this request (the recipe's, with the request's sampling).
        max_tokens: the answer's token limit.
        emit: receives the job's events (called from the worker thread).
        lvcot: LVCoT settings, or None.
        param: the request field of the video (named in decode errors).
        text: the incremental detokeniser of a streaming job (None: not streamed).
    """

    sample: ConversationSample
    settings: dict[str, Any]
    max_tokens: int
    emit: Callable[[tuple], None]
    lvcot: LVCoTSettings | None = None
    param: str = "messages"
    text: IncrementalText | None = None

    def key(self) -> tuple:
        """Jobs with equal keys can share one batch."""
        return sampling_key(self.settings), self.lvcot


class Batcher:
    """A bounded queue drained by one model thread (see the module docstring).

    Args:
        answerer: the model, tokenizer and default settings.
        max_batch: the most requests in one ``generate`` call.
        max_wait_s: how long the first request of a batch waits for others.
        max_queue: requests waiting beyond this get a 503 error.
    """

    def __init__(self, answerer: Answerer, max_batch: int = 8, max_wait_s: float = 0.01, max_queue: int = 256) -> None:
        if max_batch < 1 or max_wait_s < 0 or max_queue < 1:
            raise ValueError(f"max_batch >= 1, max_wait_s >= 0, max_queue >= 1; got {max_batch}, {max_wait_s}, "
                             f"{max_queue}")  # fmt: skip
        self.answerer, self.max_batch, self.max_wait_s = answerer, max_batch, max_wait_s
        self._queue: queue.Queue[Job | None] = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._loop, name="vidtempo-model", daemon=True)
        self.stats = {"batches": 0, "answered": 0, "largest_batch": 0}  # generate calls so far (GET /health)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def close(self, timeout: float = 60.0) -> None:
        """Finish the queued jobs, then stop the worker."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue ``job``.

        Raises:
            RequestError: 503 when the queue is full or the worker has stopped.
        """
        if not self.alive:
            raise RequestError("the model worker is not running", status=503, code="unavailable")
        job.sample = replace(job.sample, id=f"{job.sample.id or 'req'}-{next(_ids)}")
        try:
            self._queue.put_nowait(job)
        except queue.Full as err:
            raise RequestError(f"{self._queue.maxsize} requests are waiting; retry later", status=503,
                               code="overloaded") from err  # fmt: skip

    # ------------------------------------------------------------------ the worker thread
    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key(), []).append(job)
            for group in groups.values():
                try:
                    self._run(group, retry=True)
                except Exception as err:  # noqa: BLE001 - the worker must outlive any request
                    log.exception("batch failed")
                    for job in group:
                        _emit(job, ("error", RequestError(f"internal error: {err}", status=500, code="server_error")))

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
        return jobs

    def _run(self, jobs: list[Job], retry: bool) -> None:
        ready = False

        def on_ready(errors: dict[int, str]) -> None:
            nonlocal ready
            ready = True
            for k, job in enumerate(jobs):
                if k in errors:
                    _emit(job, ("error", RequestError(errors[k], job.param, code="undecodable_video")))
                else:
                    _emit(job, ("start",))

        def on_token(k: int, token: int) -> None:
            text = jobs[k].text
            if text is not None and (delta := text.add(token)):
                _emit(jobs[k], ("delta", delta))

        try:
            answers = self.answerer.answer([j.sample for j in jobs], [j.max_tokens for j in jobs],
                                           settings=jobs[0].settings, lvcot=jobs[0].lvcot, on_ready=on_ready,
                                           on_token=on_token)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - turned into each request's error
            if not ready and retry and len(jobs) > 1:
                for job in jobs:  # find the request that fails; the others are answered
                    self._run([job], retry=False)
                return
            for job in jobs:
                _emit(job, ("error", _as_request_error(err)))
            return
        self.stats["batches"] += 1
        self.stats["answered"] += len(jobs)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        for job, answer in zip(jobs, answers):
            if answer.error is None:
                _emit(job, ("done", answer))


def _as_request_error(err: Exception) -> RequestError:
    """A failure while answering: over-long prompts and other bad inputs are 400 on ``messages``; anything
    else is the server's fault (500, logged with its traceback)."""
    if isinstance(err, OverlongError):
        return RequestError(str(err), "messages", code="context_length_exceeded")
    if isinstance(err, ValueError):
        return RequestError(str(err), "messages")
    log.error("answering failed", exc_info=err)
    return RequestError(f"internal error: {type(err).__name__}: {err}", status=500, code="server_error")


def _emit(job: Job, event: tuple) -> None:
    try:
        job.emit(event)
    except Exception:  # noqa: BLE001 - a client gone (closed event loop) must not stop the worker
        log.debug("dropped an event for %s", job.sample.id)
