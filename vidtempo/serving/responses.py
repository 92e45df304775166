"""OpenAI response objects: ``chat.completion``, ``chat.completion.chunk`` and server-sent event lines.

Example:
    >>> c = completion("chatcmpl-1", "m", 0, "2.0 - 3.5 seconds", "stop", usage(40, 6))
    >>> c["choices"][0]["message"]["content"], c["usage"]["total_tokens"]
    ('2.0 - 3.5 seconds', 46)
    >>> sse(chunk("chatcmpl-1", "m", 0, {"content": "2.0"})).startswith('data: {"id": "chatcmpl-1", "object": "chat.completion.chunk"')
    True
"""

from __future__ import annotations

import json
from typing import Any

DONE = "data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def completion(rid: str, model: str, created: int, text: str, finish_reason: str, use: dict[str, int],
               extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A non-streamed answer; ``extra`` goes under the ``vidtempo`` key (frames seen, LVCoT's trace)."""
    out: dict[str, Any] = {
        "id": rid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": use,
    }  # fmt: skip
    if extra:
        out["vidtempo"] = extra
    return out


def chunk(rid: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None,
          use: dict[str, int] | None = None, empty: bool = False) -> dict[str, Any]:  # fmt: skip
    """One streamed chunk; ``empty`` gives the final usage chunk (no choices), as OpenAI sends it."""
    choices = [] if empty else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    out: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": choices}  # fmt: skip
    if use is not None:
        out["usage"] = use
    return out


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event line."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
