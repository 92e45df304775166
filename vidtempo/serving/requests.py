"""Parsing ``POST /v1/chat/completions`` bodies into :class:`ChatRequest`, or a :class:`RequestError` that names
the offending field (OpenAI's error object: ``message``, ``type``, ``param``, ``code``).

Request schema (docs/serving.md): OpenAI's chat completion body; a user turn's ``content`` is a string or a list
of parts ``{"type": "text", "text": ...}`` and exactly one ``{"type": "video_url", "video_url": {"url": ...}}``
per conversation (a local path, a ``file://`` URL or a base64 ``data:video/...`` URL). The video goes where its
part stands (``<video>`` between the texts, parts joined by a newline). Extra fields: ``fps``, ``max_frames``,
``lvcot``. Decoding is greedy: ``temperature`` / ``top_p`` other than 0 / 1, and ``n`` > 1, are refused.

Example:
    >>> req = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": [
    ...     {"type": "video_url", "video_url": {"url": "file:///data/v.mp4"}},
    ...     {"type": "text", "text": "When does the beep sound?"}]}], "fps": 2}, "m", ServeLimits())
    >>> req.messages[0]["content"], req.video.url, req.video.param, req.fps
    ('<video>\\nWhen does the beep sound?', 'file:///data/v.mp4', 'messages[0].content[0].video_url.url', 2.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vidtempo.data.samples import VIDEO_PLACEHOLDER

ROLES = ("system", "user", "assistant")
# OpenAI fields this server reads; any other field is refused by name rather than silently ignored
KNOWN_FIELDS = ("model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                "temperature", "top_p", "n", "seed", "user", "fps", "max_frames", "lvcot")  # fmt: skip
UNSUPPORTED_PARTS = {"image_url": "images", "input_audio": "audio", "file": "files", "refusal": "refusals"}


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a message, and the field it is about (``param``).

    Example:
        >>> RequestError("expected a number > 0, got -1", param="fps").body()["error"]["param"]
        'fps'
    """

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str = "invalid_value") -> None:  # fmt: skip
        super().__init__(f"{param}: {message}" if param else message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def body(self) -> dict[str, Any]:
        """OpenAI's error object; the message starts with the field it names."""
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for.

    Attributes:
        default_max_tokens: answer length when the request gives none.
        max_tokens: the most new tokens a request may ask for.
        max_frames: the most frames one video may be sampled to.
        max_video_seconds: the longest video accepted.
        max_body_mb: the largest request body (base64 videos included).
        media_roots: local paths and ``file://`` URLs must lie under one of these folders (empty = anywhere).
    """

    default_max_tokens: int = 64
    max_tokens: int = 1024
    max_frames: int = 256
    max_video_seconds: float = 3600.0
    max_body_mb: float = 64.0
    media_roots: tuple[str, ...] = ()


@dataclass
class VideoRef:
    """The request's video: its URL as sent and the field that holds it (for error messages)."""

    url: str
    param: str


@dataclass
class ChatRequest:
    """A parsed request.

    Attributes:
        messages: the conversation with ``<video>`` where the video part was.
        video: the video part.
        max_tokens: the answer's token limit.
        fps, max_frames: frame sampling over the recipe's (None = the recipe's).
        lvcot: the ``lvcot`` value as sent (None = off); checked against the model by the app.
    """

    model: str
    messages: list[dict[str, str]]
    video: VideoRef
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    fps: float | None = None
    max_frames: int | None = None
    lvcot: Any = None


def _int(value: Any, param: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"expected an integer from {low} to {high}, got {value!r}", param)
    return value


def parse_chat_request(body: Any, model_id: str, limits: ServeLimits) -> ChatRequest:
    """Check a decoded JSON body; see the module docstring.

    Raises:
        RequestError: the first problem found, naming its field (404 for an unknown model).
    """
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(KNOWN_FIELDS))
    if unknown:
        raise RequestError(f"unsupported field; this server reads {', '.join(KNOWN_FIELDS)}", unknown[0],
                           code="unsupported_field")  # fmt: skip
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(f"required: the model name ({model_id!r}, see GET /v1/models)", "model")
    if model != model_id:
        raise RequestError(f"unknown model {model!r}; this server serves {model_id!r}", "model", status=404,
                           code="model_not_found")  # fmt: skip
    _check_sampling(body)
    messages, video = _messages(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"expected true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError(f"expected {{'include_usage': true|false}}, got {options!r}", "stream_options")
    tokens_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    tokens = body.get(tokens_key)
    max_tokens = limits.default_max_tokens if tokens is None else _int(tokens, tokens_key, 1, limits.max_tokens)
    return ChatRequest(model=model, messages=messages, video=video, max_tokens=max_tokens, stream=stream,
                       include_usage=bool(options.get("include_usage", False)), fps=_fps(body.get("fps")),
                       max_frames=None if body.get("max_frames") is None else
                       _int(body["max_frames"], "max_frames", 1, limits.max_frames),
                       lvcot=body.get("lvcot"))  # fmt: skip


def _check_sampling(body: dict[str, Any]) -> None:
    """Greedy decoding only: refuse what would ask for sampling or several choices."""
    for key, neutral in (("temperature", 0), ("top_p", 1)):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or value != neutral:
            raise RequestError(f"this server decodes greedily; leave {key} out or set it to {neutral}, "
                               f"got {value!r}", key, code="unsupported_value")  # fmt: skip
    n = body.get("n")
    if n is not None and n != 1:
        raise RequestError(f"one choice per request; leave n out or set it to 1, got {n!r}", "n",
                           code="unsupported_value")  # fmt: skip


def _fps(value: Any) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or value > 240:
        raise RequestError(f"expected frames per second, a number > 0 and <= 240, got {value!r}", "fps")
    return float(value)


def _messages(value: Any) -> tuple[list[dict[str, str]], VideoRef]:
    if not isinstance(value, list) or not value:
        raise RequestError("required: a non-empty list of {role, content} messages", "messages")
    out: list[dict[str, str]] = []
    videos: list[VideoRef] = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"expected a {{role, content}} object, got {message!r}", where)
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(f"expected one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
        text, found = _content(message.get("content"), f"{where}.content", role)
        videos += found
        out.append({"role": role, "content": text})
    if not videos:
        raise RequestError("no video: add a user content part {\"type\": \"video_url\", \"video_url\": "
                           "{\"url\": PATH | file:// URL | data:video/mp4;base64,...}}", "messages",
                           code="missing_video")  # fmt: skip
    if len(videos) > 1:
        raise RequestError(f"one video per request, got {len(videos)}", videos[1].param)
    if out[-1]["role"] != "user":
        raise RequestError("the last message must be the user's question", f"messages[{len(out) - 1}].role")
    return out, videos[0]


def _content(value: Any, where: str, role: str) -> tuple[str, list[VideoRef]]:
    """The turn's text with ``<video>`` where its video part stands, and that part."""
    if isinstance(value, str):
        _no_placeholder(value, where)
        return value, []
    if not isinstance(value, list) or not value:
        raise RequestError("expected a string or a non-empty list of content parts", where)
    pieces: list[str] = []
    videos: list[VideoRef] = []
    for j, part in enumerate(value):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"expected a string, got {text!r}", f"{at}.text")
            _no_placeholder(text, f"{at}.text")
            pieces.append(text)
        elif kind == "video_url":
            if role != "user":
                raise RequestError(f"a video goes in a user message, not {role!r}", f"{at}.type")
            url = (part.get("video_url") or {}).get("url") if isinstance(part.get("video_url"), dict) else None
            if not isinstance(url, str) or not url:
                raise RequestError("expected {\"url\": PATH | file:// URL | data: URL}", f"{at}.video_url")
            videos.append(VideoRef(url, f"{at}.video_url.url"))
            pieces.append(VIDEO_PLACEHOLDER)
        elif kind in UNSUPPORTED_PARTS:
            raise RequestError(f"{UNSUPPORTED_PARTS[kind]} are not supported; send text and one video_url part",
                               f"{at}.type", code="unsupported_content")  # fmt: skip
        else:
            raise RequestError(f"expected a part of type 'text' or 'video_url', got {kind!r}", f"{at}.type")
    return "\n".join(pieces), videos


def _no_placeholder(text: str, where: str) -> None:
    if VIDEO_PLACEHOLDER in text:
        raise RequestError(f"the text may not contain {VIDEO_PLACEHOLDER!r} (the video goes where its "
                           "video_url part stands)", where)  # fmt: skip
