"""The OpenAI-compatible HTTP app (FastAPI): ``POST /v1/chat/completions`` (streamed by server-sent events or
not), ``GET /v1/models``, ``GET /health``. ``vidtempo serve`` runs it with uvicorn (docs/serving.md).

A request is parsed (:mod:`vidtempo.serving.requests`), its video made local and probed
(:mod:`vidtempo.serving.media`), queued (:mod:`vidtempo.serving.batcher`), and answered once the worker
reports it decoded. Every refusal is a 4xx JSON error naming the field; an unexpected failure is a 500 JSON
error for that request only.

Example:
    >>> from vidtempo.inference.answer import Answerer
    >>> from vidtempo.models.build import build_video_llm
    >>> from vidtempo.models.tokenizers import tiny_tokenizer
    >>> model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
    ...                          "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})
    >>> service = Service(Answerer(model.eval(), tiny_tokenizer(), {"num_frames": 4}), "tiny")
    >>> sorted(r.path for r in create_app(service).routes if r.path.startswith(("/v1", "/health")))
    ['/health', '/v1/chat/completions', '/v1/models']
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request  # FastAPI reads the handlers' annotations: module level, not local
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from vidtempo.data.samples import ConversationSample
from vidtempo.data.video_prompt import with_sampling
from vidtempo.inference.answer import Answer, Answerer
from vidtempo.inference.lvcot import LVCoTError, LVCoTSettings
from vidtempo.inference.streaming import IncrementalText
from vidtempo.serving.batcher import Batcher, Job
from vidtempo.serving.media import local_video, probe_video
from vidtempo.serving.requests import ChatRequest, RequestError, ServeLimits, parse_chat_request
from vidtempo.serving.responses import DONE, chunk, completion, sse, usage


class Service:
    """What the app serves: one model under one name, its batcher and the request limits.

    Args:
        answerer: the loaded model, tokenizer and the recipe's inference collator settings.
        model_id: the name clients send as ``model``.
        limits: per-request limits.
        max_batch, max_wait_s: batching (see :class:`~vidtempo.serving.batcher.Batcher`).
    """

    def __init__(self, answerer: Answerer, model_id: str, limits: ServeLimits | None = None, max_batch: int = 8,
                 max_wait_s: float = 0.01) -> None:  # fmt: skip
        self.answerer, self.model_id = answerer, model_id
        self.limits = limits or ServeLimits()
        self.batcher = Batcher(answerer, max_batch=max_batch, max_wait_s=max_wait_s)
        self.created = int(time.time())

    def lvcot(self, value: Any) -> LVCoTSettings | None:
        """The request's ``lvcot`` as settings (TDC checkpoints only)."""
        try:
            settings = LVCoTSettings.from_dict(value, where="lvcot")
        except LVCoTError as err:
            raise RequestError(str(err).removeprefix("lvcot: "), "lvcot") from err
        if settings is not None and not self.supports_lvcot():
            name = type(getattr(self.answerer.model, "compressor", None)).__name__
            raise RequestError(f"LVCoT is available for TDC checkpoints; this model's compressor is {name}",
                               "lvcot", code="unsupported_value")  # fmt: skip
        return settings

    def supports_lvcot(self) -> bool:
        from vidtempo.models.compressors.tdc import TDCCompressor

        return isinstance(getattr(self.answerer.model, "compressor", None), TDCCompressor)

    def length_budget(self, frames: int) -> dict[str, Any]:
        """Collator settings that refuse a prompt longer than the model's context (``data.overlong: error``)."""
        max_length = getattr(self.answerer.model, "max_length", None)
        if max_length is None:
            return {}
        return {"overlong": "error", "max_length": int(max_length),
                "video_tokens": int(self.answerer.model.video_tokens(frames))}  # fmt: skip


def create_app(service: Service) -> FastAPI:
    """The FastAPI app; the batcher starts with the app and stops with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not service.batcher.alive:
            service.batcher.start()
        yield
        await asyncio.to_thread(service.batcher.close)

    app = FastAPI(title="vidtempo", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        error = RequestError(f"{request.method} {request.url.path}: {err.detail}", status=err.status_code,
                             code="not_found" if err.status_code == 404 else "http_error")  # fmt: skip
        return JSONResponse(error.body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception) -> JSONResponse:
        error = RequestError(f"internal error: {type(err).__name__}: {err}", status=500, code="server_error")
        return JSONResponse(error.body(), status_code=500)

    @app.get("/health")
    async def health() -> JSONResponse:
        alive = service.batcher.alive
        return JSONResponse({"status": "ok" if alive else "worker stopped", "model": service.model_id,
                             "waiting": service.batcher.waiting, **service.batcher.stats},
                            status_code=200 if alive else 503)  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_id, "object": "model", "created": service.created,
                                            "owned_by": "vidtempo"}]}  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > service.limits.max_body_mb * 2**20:
            raise RequestError(f"the body is {len(raw) / 2**20:.1f} MiB; this server accepts up to "
                               f"{service.limits.max_body_mb:g} MiB (--max-body-mb)", "messages", status=413,
                               code="payload_too_large")  # fmt: skip
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"the body is not JSON: {err}", code="invalid_json") from err
        req = parse_chat_request(body, service.model_id, service.limits)
        job, events, first = await _queue(service, req)
        if first[0] == "error":
            raise first[1]
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            stream = _stream(service, req, job, events, rid, created)
            return StreamingResponse(stream, media_type="text/event-stream")
        kind, value = await events.get()
        if kind == "error":
            raise value
        return completion(rid, service.model_id, created, value.text, value.finish_reason, _usage(value),
                          _extra(value))  # fmt: skip

    return app


async def _queue(service: Service, req: ChatRequest) -> tuple[Job, asyncio.Queue, tuple]:
    """Make the video local, probe it, queue the job and wait for its first event (``start`` or ``error``):
    by then the worker has decoded the video, and the temporary file of a data URL is removed."""
    lvcot = service.lvcot(req.lvcot)
    settings = with_sampling(service.answerer.settings, fps=req.fps, max_frames=req.max_frames)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    opened = local_video(req.video, service.limits)
    path = await asyncio.to_thread(opened.__enter__)
    try:
        probe = await asyncio.to_thread(probe_video, path, settings, service.limits, req.video.param)
        text = IncrementalText(service.answerer.tokenizer) if req.stream else None
        job = Job(ConversationSample(video=path, messages=req.messages, id="chatcmpl"),
                  {**settings, **service.length_budget(probe.frames)}, req.max_tokens,
                  emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event), lvcot=lvcot,
                  param=req.video.param, text=text)  # fmt: skip
        service.batcher.submit(job)
        first = await events.get()
    finally:
        opened.__exit__(None, None, None)
    return job, events, first


async def _stream(service: Service, req: ChatRequest, job: Job, events: Any, rid: str, created: int
                  ) -> AsyncIterator[str]:  # fmt: skip
    model = service.model_id
    yield sse(chunk(rid, model, created, {"role": "assistant", "content": ""}))
    while True:
        kind, *value = await events.get()
        if kind == "delta":
            yield sse(chunk(rid, model, created, {"content": value[0]}))
            continue
        if kind == "error":
            yield sse(value[0].body())
            break
        answer: Answer = value[0]
        assert job.text is not None
        try:
            rest = job.text.finish(answer.text)
        except ValueError as err:  # a tokenizer whose text changed behind the deltas: say so, do not end silently
            yield sse(RequestError(str(err), status=500, code="stream_mismatch").body())
            break
        if rest:
            yield sse(chunk(rid, model, created, {"content": rest}))
        yield sse(chunk(rid, model, created, {}, answer.finish_reason))
        if req.include_usage:
            yield sse(chunk(rid, model, created, {}, use=_usage(answer), empty=True))
        break
    yield DONE


def _usage(answer: Answer) -> dict[str, int]:
    return usage(answer.prompt_tokens, len(answer.token_ids))


def _extra(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"num_frames": answer.num_frames}
    if answer.trace is not None:
        out["lvcot"] = answer.trace.record()
    return out
