"""A request's video: its URL turned into a local file, and a metadata probe (no decoding) that refuses what
would fail or run too long before the request is queued.

URLs: a local path, ``file://`` (host empty or ``localhost``), or ``data:video/<type>;base64,<data>`` (written
to a temporary file, removed once the frames are decoded). ``http(s)://`` is refused: this server does not
fetch remote files.

Example:
    >>> import base64, tempfile
    >>> from vidtempo.data.testing import make_test_video
    >>> path = make_test_video(tempfile.mkdtemp() + "/v.mp4", duration=1.0, fps=8, audio=False)
    >>> url = "data:video/mp4;base64," + base64.b64encode(open(path, "rb").read()).decode()
    >>> with local_video(VideoRef(url, "messages[0].content[0].video_url.url"), ServeLimits()) as local:
    ...     probe_video(local, {"num_frames": 4}, ServeLimits(), "messages[0].content[0].video_url.url").frames
    4
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from vidtempo.data.errors import VideoDecodeError
from vidtempo.serving.requests import RequestError, ServeLimits, VideoRef

DATA_URL = re.compile(r"^data:(video/[\w.+-]+)?(;[\w=.-]+)*;base64,", re.IGNORECASE)
SUFFIXES = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
            "video/x-msvideo": ".avi"}  # fmt: skip


@dataclass
class Probe:
    """What the metadata says: the video's length and the frames the request's settings will take."""

    duration: float
    frames: int


@contextmanager
def local_video(ref: VideoRef, limits: ServeLimits) -> Iterator[str]:
    """The video as a local file for the duration of the block (a data URL's temporary file is removed after).

    Raises:
        RequestError: a remote URL, a bad data URL, a missing file, or a path outside ``limits.media_roots``.
    """
    match = DATA_URL.match(ref.url)
    if match:
        path = _write_data_url(ref, match, limits)
        try:
            yield path
        finally:
            os.unlink(path)
        return
    yield _local_path(ref, limits)


def _write_data_url(ref: VideoRef, match: re.Match, limits: ServeLimits) -> str:
    try:
        data = base64.b64decode(ref.url[match.end() :], validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"the data URL is not valid base64 ({err})", ref.param) from err
    if not data:
        raise RequestError("the data URL holds no bytes", ref.param)
    suffix = SUFFIXES.get((match.group(1) or "").lower(), ".mp4")
    fd, path = tempfile.mkstemp(prefix="vidtempo-serve-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _local_path(ref: VideoRef, limits: ServeLimits) -> str:
    url = ref.url
    if url.startswith("file:"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise RequestError(f"file:// URLs name a local file; host {parsed.netloc!r} is not local", ref.param)
        url = unquote(parsed.path)
    elif re.match(r"^[a-zA-Z][\w+.-]*://", url) or url.startswith("data:"):
        raise RequestError("only local paths, file:// URLs and base64 data:video/...;base64 URLs are accepted "
                           "(this server does not fetch remote files)", ref.param, code="unsupported_url")  # fmt: skip
    path = Path(url).expanduser().resolve()
    if limits.media_roots and not any(path.is_relative_to(Path(r).resolve()) for r in limits.media_roots):
        raise RequestError(f"{path} is outside the folders this server may read (--media-root)", ref.param,
                           status=403, code="forbidden_path")  # fmt: skip
    if not path.is_file():
        raise RequestError(f"file not found: {path}", ref.param, code="video_not_found")
    return str(path)


def probe_video(path: str, settings: dict[str, Any], limits: ServeLimits, param: str) -> Probe:
    """Open the container (no frame decoded) and plan the frames ``settings`` sample.

    Raises:
        RequestError: the file is not a decodable video (``param``), longer than ``limits.max_video_seconds``
            (``param``), or the sampling would take more than ``limits.max_frames`` frames (``fps``).
    """
    from vidtempo.data.video import open_video, plan_frames

    try:
        with open_video(path, settings.get("backend", "pyav")) as decoder:
            meta = decoder.meta
    except VideoDecodeError as err:
        raise RequestError(f"cannot decode the video: {err.reason}", param, code="undecodable_video") from err
    if meta.duration > limits.max_video_seconds:
        raise RequestError(f"the video is {meta.duration:.1f} s long; this server accepts up to "
                           f"{limits.max_video_seconds:g} s", param, code="video_too_long")  # fmt: skip
    try:
        plan = plan_frames(meta, num_frames=settings.get("num_frames"), fps=settings.get("fps"),
                           max_frames=settings.get("max_frames"))  # fmt: skip
    except ValueError as err:
        raise RequestError(f"cannot sample this video: {err}", param, code="undecodable_video") from err
    frames = len(plan.indices)
    if frames > limits.max_frames:
        raise RequestError(f"{frames} frames at this rate over {meta.duration:.1f} s; this server samples up to "
                           f"{limits.max_frames}: lower fps or set max_frames",
                           "fps" if settings.get("fps") is not None else "max_frames", code="too_many_frames")  # fmt: skip
    return Probe(float(meta.duration), frames)
