"""Annotation datasets: parse files into typed samples (no decoding here; the collator decodes).

Every dataset reads and validates its whole file at construction, so a malformed record fails at once with
an :class:`~vidtempo.data.errors.AnnotationError` naming the file, the record and the field. Video paths
are resolved against ``video_root`` (absolute paths are kept). ``ds[i]`` returns the dataset's own sample
type; ``ds.conversations()`` is a Dataset of :class:`ConversationSample` for the collator.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.json"
    >>> _ = path.write_text(json.dumps([{"video": "a.mp4", "conversations": [
    ...     {"from": "human", "value": "<image>\\nWhat happens?"}, {"from": "gpt", "value": "A dog runs."}]}]))
    >>> ds = ConversationDataset(path, video_root="/videos")
    >>> ds[0].video, ds[0].messages[0]["content"]
    ('/videos/a.mp4', '<video>\\nWhat happens?')
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from torch.utils.data import Dataset

from vidtempo.data.errors import AnnotationError
from vidtempo.data.samples import (
    VIDEO_PLACEHOLDER,
    ConversationSample,
    GroundingSample,
    MultipleChoiceSample,
    PreferenceSample,
    RetrievalSample,
)
from vidtempo.data.timestamps import TimestampCodec, get_codec

log = logging.getLogger(__name__)

S = TypeVar("S")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_PLACEHOLDER_RE = re.compile(r"<image>|<video>")
_LETTERS = "ABCDEFGHIJ"
_OPTION_PREFIX_RE = re.compile(r"^\s*\(?([A-J])[.):]\s*")
GROUNDING_QUESTION = "When does '{query}' happen in the video?"


def _fail(path: Path | str, index: int | str | None, field: str | None, msg: str) -> AnnotationError:
    where = str(path)
    if index is not None:
        where += f": record {index}"
    if field is not None:
        where += f": field '{field}'"
    return AnnotationError(f"{where}: {msg}")


def resolve_path(video_root: str | Path, name: str) -> str:
    """``name`` joined to ``video_root`` unless it is absolute or the root is empty."""
    if not video_root or Path(name).is_absolute():
        return str(name)
    return str(Path(video_root) / name)


def load_records(path: str | Path) -> list[Any] | dict[str, Any]:
    """Read a JSON file (list or dict) or a JSONL file (one record per line).

    Tolerates trailing commas before ``}``/``]`` (the official Video-MME template has them).

    Raises:
        AnnotationError: missing file or invalid JSON (with the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, None, None, "annotation file not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip() and path.suffix != ".jsonl":
        raise _fail(path, None, None, "empty file; expected JSON (a list of records) or JSONL (one per line)")
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise _fail(path, f"at line {n}", None, f"invalid JSON: {err.msg}") from err
        return records
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        try:
            return json.loads(re.sub(r",(\s*[}\]])", r"\1", text))
        except json.JSONDecodeError:
            raise _fail(path, None, None, f"invalid JSON at line {err.lineno}: {err.msg}") from err


def record_list(path: Path, records: Any, allow_empty: bool = False) -> list[Any]:
    """``records`` when it is a list (non-empty unless ``allow_empty``), else an error naming the file."""
    if not isinstance(records, list):
        raise _fail(path, None, None, "expected a list of records (JSON array or JSONL)")
    if not records and not allow_empty:
        raise _fail(path, None, None, "no records; expected a non-empty JSON array or JSONL with one record per line")
    return records


def _require(rec: Any, key: str, kind: type | tuple[type, ...], path: Path, index: int) -> Any:
    if not isinstance(rec, dict):
        raise _fail(path, index, None, f"expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        raise _fail(path, index, key, "missing")
    value = rec[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _fail(path, index, key, f"expected {names}, got {type(value).__name__}")
    return value


def _float(value: Any, path: Path, index: int | str, field: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise _fail(path, index, field, f"expected a number, got {value!r}") from err


class _ConversationView(Dataset, Generic[S]):
    """A Dataset of :class:`ConversationSample` built on demand from another dataset."""

    def __init__(self, size: int, build: Callable[[int], ConversationSample]) -> None:
        self._size, self._build = size, build

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> ConversationSample:
        if not -self._size <= index < self._size:
            raise IndexError(f"index {index} out of range for {self._size} conversations")
        return self._build(index % self._size)

    def __iter__(self) -> Iterator[ConversationSample]:
        return (self._build(i) for i in range(self._size))


class AnnotationDataset(Dataset, Generic[S]):
    """Base: a list of parsed samples plus a conversation view. Subclasses fill ``self.samples``."""

    samples: list[S]

    def __init__(self, path: str | Path, video_root: str | Path = "") -> None:
        self.path = Path(path)
        self.video_root = str(video_root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> S:
        return self.samples[index]

    def __iter__(self) -> Iterator[S]:
        return iter(self.samples)

    def conversation(self, index: int) -> ConversationSample:
        """Sample ``index`` as a conversation (subclasses that have one override this)."""
        raise NotImplementedError(f"{type(self).__name__} samples have no conversation form")

    def conversations(self) -> Dataset:
        """A Dataset whose items are :class:`ConversationSample` (what the collator consumes)."""
        return _ConversationView(len(self), self.conversation)

    def missing_videos(self) -> list[str]:
        """Video paths referenced by the samples that do not exist on disk (sorted, unique)."""
        videos = {getattr(s, "video", None) for s in self.samples} - {None}
        return sorted(v for v in videos if not Path(v).is_file())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self)} samples)"


def normalise_messages(
    turns: Any, path: Path, index: int, field: str, *, from_key: str = "from", value_key: str = "value"
) -> list[dict[str, str]]:
    """LLaVA ``[{"from", "value"}]`` or chat ``[{"role", "content"}]`` turns -> chat messages.

    ``<image>`` placeholders become ``<video>``; at most one placeholder is allowed per sample.
    """
    if not isinstance(turns, list) or not turns:
        raise _fail(path, index, field, "expected a non-empty list of turns")
    messages = []
    for n, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _fail(path, index, f"{field}[{n}]", f"expected an object, got {type(turn).__name__}")
        role_key, text_key = (from_key, value_key) if from_key in turn else ("role", "content")
        role = _ROLES.get(str(turn.get(role_key, "")).lower())
        if role is None:
            raise _fail(path, index, f"{field}[{n}].{role_key}", f"unknown role {turn.get(role_key)!r}")
        text = turn.get(text_key)
        if not isinstance(text, str):
            raise _fail(path, index, f"{field}[{n}].{text_key}", f"expected a string, got {type(text).__name__}")
        messages.append({"role": role, "content": _PLACEHOLDER_RE.sub(VIDEO_PLACEHOLDER, text)})
    count = sum(m["content"].count(VIDEO_PLACEHOLDER) for m in messages)
    if count > 1:
        raise _fail(path, index, field, f"{count} <video>/<image> placeholders; one video takes at most one")
    return messages


class ConversationDataset(AnnotationDataset[ConversationSample]):
    """LLaVA/TDC conversations (JSON list or JSONL), or the ``messages`` + ``videos`` chat form.

    Records: ``{"id"?, "video"?, "audio"?, "start"?, "end"?, "conversations": [{"from": "human"|"gpt"|"system",
    "value": ...}]}`` or ``{"messages": [{"role", "content"}], "videos": [path]}``. ``<image>`` becomes
    ``<video>``. A LLaVA image record (``"image": "x.jpg"``, or ``"images": [path]`` in the messages form) is a
    1-frame video: its ``video`` is the image path and ``meta["media"]`` is ``"image"`` (``load_clip`` decodes
    an image suffix as one frame). A record without a video is a text-only sample (``video=None``), and one
    without an assistant turn has nothing to train on (a prompt for generation), unless ``require_video`` /
    ``require_answer``: then such a record fails the load with one line naming the file and the record id. An
    empty file or an empty list fails too (``allow_empty`` lets it through).

    ``answer_time_format`` (a codec name of ``vidtempo.data.timestamps.CODECS``) rewrites the time values of
    every turn in that codec's format (``vidtempo.data.answer_times``): VTimeLLM placeholders (``"From <s0> to
    <e0>."`` with ``meta.token``; ``meta.split`` gives the clip bounds) and intervals written in seconds. A record
    with placeholders and no ``answer_time_format`` fails the load rather than train on ``<s0>`` literally.

    Example:
        >>> ds = ConversationDataset("train.jsonl", video_root="/data/videos")  # doctest: +SKIP
        >>> ds[0].messages[-1]["role"]  # doctest: +SKIP
        'assistant'
    """

    def __init__(
        self, path: str | Path, video_root: str | Path = "", *, require_video: bool = False,
        require_answer: bool = False, allow_empty: bool = False, answer_time_format: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(path, video_root)
        records = record_list(self.path, load_records(self.path), allow_empty)
        self.require_video, self.require_answer = require_video, require_answer
        self.time_codec = get_codec(answer_time_format) if answer_time_format else None
        self.samples = [self._checked(self._parse(rec, i), i) for i, rec in enumerate(records)]

    def _checked(self, sample: ConversationSample, i: int) -> ConversationSample:
        """``sample``, or an error naming the file and the record when it lacks what is required."""
        where = f"{i} (id '{sample.id}')"
        if self.require_video and sample.video is None:
            raise _fail(self.path, where, "video", "missing; expected a video path (require_video is set)")
        if self.require_answer and not any(m["role"] == "assistant" for m in sample.messages):
            raise _fail(self.path, where, "conversations", "no assistant turn; expected the answer to train on "
                        "(a {'from': 'gpt'} or {'role': 'assistant'} turn; require_answer is set)")  # fmt: skip
        return sample

    def _parse(self, rec: Any, i: int) -> ConversationSample:
        if isinstance(rec, dict) and "messages" in rec:
            messages = normalise_messages(rec["messages"], self.path, i, "messages")
        else:
            messages = normalise_messages(_require(rec, "conversations", list, self.path, i), self.path, i,
                                          "conversations")
        video, media = media_path(rec, self.path, i)
        if video is None and any(VIDEO_PLACEHOLDER in m["content"] for m in messages):
            raise _fail(self.path, f"{i} (id '{rec.get('id', i)}')", "video", "the text has a <video>/<image> "
                        "placeholder but the record names no media; expected 'video', 'videos', 'image' or "
                        "'images' (without one the sample would train as text)")  # fmt: skip
        audio = rec.get("audio")
        if audio is not None and not isinstance(audio, str):
            raise _fail(self.path, i, "audio", f"expected a path string or null, got {type(audio).__name__}")
        start = _float(rec["start"], self.path, i, "start") if rec.get("start") is not None else None
        end = _float(rec["end"], self.path, i, "end") if rec.get("end") is not None else None
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        split = meta.get("split")
        if start is None and end is None and isinstance(split, list) and len(split) == 2:  # VTimeLLM clip bounds
            start, end = _float(split[0], self.path, i, "meta.split[0]"), _float(split[1], self.path, i, "meta.split[1]")
        if start is not None and end is not None and start >= end:
            raise _fail(self.path, i, "start", f"start={start} must be < end={end}")
        messages = self._times(messages, rec, meta, i, start, end)
        skip = ("conversations", "messages", "videos", "video", "images", "image", "audio")
        extra = {k: v for k, v in rec.items() if k not in skip}
        return ConversationSample(
            video=resolve_path(self.video_root, video) if video else None,
            messages=messages,
            audio=resolve_path(self.video_root, audio) if audio else None,
            start=start,
            end=end,
            id=str(rec.get("id", i)),
            meta={"source": str(self.path), **extra, **({"media": media} if video and media == "image" else {})},
        )

    def _times(
        self, messages: list[dict[str, str]], rec: Any, meta: dict[str, Any], i: int, start: float | None,
        end: float | None,
    ) -> list[dict[str, str]]:  # fmt: skip
        """Time values of the user and assistant turns in ``answer_time_format`` (``vidtempo.data.answer_times``)."""
        from vidtempo.data.answer_times import TimeValueError, has_time_placeholders, render_times

        values = meta.get("token") if isinstance(meta.get("token"), dict) else None
        where = f"{i} (id '{rec.get('id', i)}')"
        origin = start or 0.0  # meta.token times count from the clip's start (VTimeLLM); the video's frames do not
        if self.time_codec is None:
            if any(has_time_placeholders(m["content"], values) for m in messages):
                raise _fail(self.path, where, "conversations", "time placeholders such as <s0> with no "
                            "answer_time_format: set it (seconds, relative, ...) so they become times")  # fmt: skip
            return messages
        raw = meta.get("duration", rec.get("duration"))
        duration = _float(raw, self.path, where, "meta.duration") if raw is not None else None
        if start is not None and end is not None:
            duration = end - start  # the clip's span (VTimeLLM: meta.duration is the split's length)
        shifted = {k: _float(v, self.path, where, f"meta.token.{k}") + origin for k, v in (values or {}).items()}
        out = []
        for n, m in enumerate(messages):
            try:
                text = m["content"] if m["role"] == "system" else render_times(m["content"], self.time_codec,
                                                                                  duration, shifted, origin)  # fmt: skip
            except (TimeValueError, ValueError) as err:
                field = "meta.duration" if duration is None and "duration" in str(err) else f"turn {n}"
                raise _fail(self.path, where, field, str(err)) from err
            out.append({**m, "content": text})
        return out

    def conversation(self, index: int) -> ConversationSample:
        return self.samples[index]


def media_path(rec: Any, path: Path, i: int) -> tuple[str | None, str]:
    """(the record's one video or image path or None, ``"video"`` or ``"image"``).

    Reads ``video`` / ``videos`` and LLaVA's ``image`` / ms-swift's ``images`` (a string or a list of one path);
    a record with both a video and an image, or several of either, is an error naming the field.
    """
    if not isinstance(rec, dict):
        raise _fail(path, i, None, f"expected a JSON object, got {type(rec).__name__}")
    found = []
    for key, media in (("video", "video"), ("videos", "video"), ("image", "image"), ("images", "image")):
        value = rec.get(key)
        if value is None or value == [] or value == "":
            continue
        items = value if isinstance(value, list) else [value]
        if len(items) != 1 or not isinstance(items[0], str) or not items[0]:
            raise _fail(path, i, key, f"expected one path (a string or a list of one), got {value!r}; a record "
                        "holds at most one video or image")  # fmt: skip
        found.append((key, items[0], media))
    if len(found) > 1:
        raise _fail(path, i, found[1][0], f"a record holds one video or image, got '{found[0][0]}' and "
                    f"'{found[1][0]}'")  # fmt: skip
    return (found[0][1], found[0][2]) if found else (None, "video")


class _GroundingDataset(AnnotationDataset[GroundingSample]):
    """Shared: flags, report and the QA rendering of grounding queries."""

    source = ""

    def __init__(self, path: str | Path, video_root: str | Path, codec: str | TimestampCodec) -> None:
        super().__init__(path, video_root)
        self.codec = get_codec(codec)

    @staticmethod
    def flags_for(start: float, end: float, duration: float | None) -> tuple[str, ...]:
        """``inverted`` when start >= end; ``interval_past_end`` when end > duration (kept as-is)."""
        flags = []
        if start >= end:
            flags.append("inverted")
        if duration is not None and end > duration:
            flags.append("interval_past_end")
        if duration is None:
            flags.append("unknown_duration")
        return tuple(flags)

    def report(self) -> dict[str, int]:
        """Counts: queries, videos, and each flag (``inverted``, ``interval_past_end``, ``unknown_duration``)."""
        counts = Counter(flag for s in self.samples for flag in s.flags)
        return {"queries": len(self.samples), "videos": len({s.video for s in self.samples}), **counts}

    def _log_report(self) -> None:
        rep = self.report()
        if rep.get("inverted"):
            bad = [s.id for s in self.samples if "inverted" in s.flags]
            log.warning("%s: %d inverted intervals (start >= end), kept and flagged: %s", self.path,
                        rep["inverted"], ", ".join(bad[:10]))
        if rep.get("interval_past_end"):
            log.info("%s: %d intervals end after the video (kept as-is, flagged)", self.path,
                     rep["interval_past_end"])

    def conversation(self, index: int) -> ConversationSample:
        """User: ``"<video>\\nWhen does '<query>' happen in the video?"``; assistant: the codec's interval."""
        s = self.samples[index]
        if s.duration is None and self.codec.name == "relative":
            raise _fail(self.path, s.id, "duration", "the relative codec needs the video duration")
        question = GROUNDING_QUESTION.format(query=s.query.strip().rstrip("."))
        return ConversationSample(
            video=s.video,
            messages=[
                {"role": "user", "content": f"{VIDEO_PLACEHOLDER}\n{question}"},
                {"role": "assistant", "content": self.codec.render(s.start, s.end, s.duration)},
            ],
            id=s.id,
            meta={"source": self.source, "duration": s.duration, "timestamps": [[s.start, s.end]],
                  "flags": list(s.flags), "codec": self.codec.name},
        )


def read_charades_durations(path: str | Path) -> dict[str, float]:
    """``id -> length`` (seconds) from a Charades metadata CSV (``Charades_v1_test.csv`` style)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, None, None, "durations file not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for col in ("id", "length"):
            if col not in (reader.fieldnames or []):
                raise _fail(path, None, col, f"missing column (header: {reader.fieldnames})")
        return {row["id"]: _float(row["length"], path, n, "length") for n, row in enumerate(reader, 2)}


class CharadesSTADataset(_GroundingDataset):
    """Charades-STA lines ``VIDEO start end##sentence`` as grounding queries (and grounding QA).

    Args:
        path: the ``charades_sta_*.txt`` file.
        video_root: folder of ``VIDEO{video_ext}`` files.
        codec: timestamp codec name for the QA form (``seconds``, ``relative``, ...).
        durations: None, a ``Charades_v1_test.csv``-style file (``id``, ``length``), or ``{id: seconds}``.
        video_ext: file extension of the videos.

    Intervals ending after the video are kept as-is and flagged ``interval_past_end``; ``start >= end``
    is kept, flagged ``inverted`` and logged (see :meth:`report`).

    Example:
        >>> ds = CharadesSTADataset("charades_sta_test.txt", durations="Charades_v1_test.csv")  # doctest: +SKIP
        >>> len(ds), ds.report()["interval_past_end"]  # doctest: +SKIP
        (3720, 562)
    """

    source = "charades_sta"

    def __init__(
        self,
        path: str | Path,
        video_root: str | Path = "",
        codec: str | TimestampCodec = "seconds",
        durations: str | Path | dict[str, float] | None = None,
        video_ext: str = ".mp4",
    ) -> None:
        super().__init__(path, video_root, codec)
        if durations is not None and not isinstance(durations, dict):
            durations = read_charades_durations(durations)
        self.durations: dict[str, float] = durations or {}
        if not self.path.is_file():
            raise _fail(self.path, None, None, "annotation file not found")
        lines = self.path.read_text(encoding="utf-8").splitlines()
        self.samples = [self._parse(line, n, video_ext) for n, line in enumerate(lines, 1) if line.strip()]
        self._log_report()

    def _parse(self, line: str, n: int, ext: str) -> GroundingSample:
        where = f"at line {n}"
        head, sep, sentence = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3 or not sentence.strip():
            raise _fail(self.path, where, None, f"expected 'VIDEO start end##sentence', got {line[:80]!r}")
        vid = parts[0]
        start = _float(parts[1], self.path, where, "start")
        end = _float(parts[2], self.path, where, "end")
        duration = self.durations.get(vid)
        return GroundingSample(
            video=resolve_path(self.video_root, vid + ext),
            query=sentence.strip(),
            start=start,
            end=end,
            duration=duration,
            id=f"{vid}#{n - 1}",
            flags=self.flags_for(start, end, duration),
        )


class ActivityNetCaptionsDataset(_GroundingDataset):
    """ActivityNet Captions JSON ``{vid: {duration, timestamps, sentences}}``: one query per sentence.

    Example:
        >>> ds = ActivityNetCaptionsDataset("val_1.json", codec="relative")  # doctest: +SKIP
        >>> len(ds)  # doctest: +SKIP
        17505
    """

    source = "activitynet_captions"

    def __init__(
        self,
        path: str | Path,
        video_root: str | Path = "",
        codec: str | TimestampCodec = "seconds",
        video_ext: str = ".mp4",
    ) -> None:
        super().__init__(path, video_root, codec)
        data = load_records(self.path)
        if not isinstance(data, dict):
            raise _fail(self.path, None, None, "expected an object {video_id: {duration, timestamps, sentences}}")
        self.samples = [s for vid, rec in data.items() for s in self._parse(vid, rec, video_ext)]
        self._log_report()

    def _parse(self, vid: str, rec: Any, ext: str) -> list[GroundingSample]:
        times = _require(rec, "timestamps", list, self.path, vid)  # type: ignore[arg-type]
        sentences = _require(rec, "sentences", list, self.path, vid)  # type: ignore[arg-type]
        if len(times) != len(sentences):
            raise _fail(self.path, vid, "timestamps", f"{len(times)} intervals for {len(sentences)} sentences")
        duration = _float(rec["duration"], self.path, vid, "duration") if "duration" in rec else None
        out = []
        for k, (span, sentence) in enumerate(zip(times, sentences)):
            if not isinstance(span, list) or len(span) != 2:
                raise _fail(self.path, vid, f"timestamps[{k}]", f"expected [start, end], got {span!r}")
            start = _float(span[0], self.path, vid, f"timestamps[{k}][0]")
            end = _float(span[1], self.path, vid, f"timestamps[{k}][1]")
            out.append(GroundingSample(
                video=resolve_path(self.video_root, vid + ext),
                query=str(sentence).strip(),
                start=start,
                end=end,
                duration=duration,
                id=f"{vid}#{k}",
                flags=self.flags_for(start, end, duration),
            ))
        return out


class MSRVTTDataset(AnnotationDataset[RetrievalSample]):
    """MSR-VTT retrieval pairs from CSV.

    * JSFusion 1k-A test CSV (``key,vid_key,video_id,sentence``; an older variant names it ``sentences``):
      one caption per video.
    * ``MSRVTT_train.9k.csv`` has only ``video_id``: pass ``captions=`` the ``MSRVTT_data.json`` file
      (``{"sentences": [{"video_id", "caption"}]}``) to get one pair per caption of those videos.

    Example:
        >>> ds = MSRVTTDataset("MSRVTT_JSFUSION_test.csv", video_root="/msrvtt/videos")  # doctest: +SKIP
        >>> ds[0].caption  # doctest: +SKIP
        'a person is connecting something to system'
    """

    def __init__(
        self,
        path: str | Path,
        video_root: str | Path = "",
        captions: str | Path | None = None,
        video_ext: str = ".mp4",
    ) -> None:
        super().__init__(path, video_root)
        rows, header = self._read_csv()
        if "video_id" not in header:
            raise _fail(self.path, None, "video_id", f"missing column (header: {header})")
        text_col = next((c for c in ("sentence", "sentences", "caption") if c in header), None)
        if text_col is not None:
            self.samples = [self._pair(r["video_id"], r[text_col], r.get("key") or str(n), video_ext, n)
                            for n, r in enumerate(rows)]
        elif captions is not None:
            self.samples = self._join_captions(rows, Path(captions), video_ext)
        else:
            raise _fail(self.path, None, "sentence", "no caption column (a train-split video list?): pass "
                        "captions='MSRVTT_data.json' to pair these videos with their captions")

    def _read_csv(self) -> tuple[list[dict[str, str]], list[str]]:
        if not self.path.is_file():
            raise _fail(self.path, None, None, "annotation file not found")
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader), list(reader.fieldnames or [])

    def _pair(self, video_id: str, caption: str, key: str, ext: str, n: int | str) -> RetrievalSample:
        if not video_id or not caption or not caption.strip():
            raise _fail(self.path, n, "sentence" if video_id else "video_id", "empty value")
        return RetrievalSample(video=resolve_path(self.video_root, video_id + ext), caption=caption.strip(), id=key)

    def _join_captions(self, rows: list[dict[str, str]], captions: Path, ext: str) -> list[RetrievalSample]:
        data = load_records(captions)
        sentences = data.get("sentences") if isinstance(data, dict) else None
        if not isinstance(sentences, list):
            raise _fail(captions, None, "sentences", "expected {'sentences': [{'video_id', 'caption'}, ...]}")
        by_video: dict[str, list[str]] = {}
        for n, s in enumerate(sentences):
            vid = _require(s, "video_id", str, captions, n)
            by_video.setdefault(vid, []).append(_require(s, "caption", str, captions, n))
        missing = [r["video_id"] for r in rows if r["video_id"] not in by_video]
        if missing:
            raise _fail(captions, None, "sentences", f"no caption for {len(missing)} videos, e.g. {missing[:3]}")
        return [self._pair(r["video_id"], c, f"{r['video_id']}#{k}", ext, n)
                for n, r in enumerate(rows) for k, c in enumerate(by_video[r["video_id"]])]


def format_options(options: Sequence[str]) -> str:
    """``"(A) first\\n(B) second"``."""
    return "\n".join(f"({_LETTERS[i]}) {opt}" for i, opt in enumerate(options))


MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


class MultipleChoiceDataset(AnnotationDataset[MultipleChoiceSample]):
    """Multiple-choice QA with options A-E (up to J).

    Layouts accepted (JSON list or JSONL):

    * flat: ``{"video", "question", "options": [...], "answer": "B", "task"?, "id"?}``; options may carry
      ``"A. "`` prefixes (stripped); MVBench's ``"candidates"`` + answer text also works;
    * Video-MME: ``[{"video_id", "duration", "questions": [{"question_id", "task_type", "question",
      "options", "answer"}]}]`` (the official template, trailing commas included);
    * EgoSchema: ``{"q_uid", "question", "option 0".."option 4"}`` with answers from ``answers=``
      (``subset_answers.json``: ``{q_uid: index}``; the map alone holds no questions and is refused).

    Example:
        >>> ds = MultipleChoiceDataset("videomme/output_test_template.json")  # doctest: +SKIP
        >>> ds[0].answer, ds[0].options[0]  # doctest: +SKIP
        ('C', 'Apples.')
    """

    def __init__(
        self,
        path: str | Path,
        video_root: str | Path = "",
        answers: str | Path | dict[str, int | str] | None = None,
        video_ext: str = ".mp4",
    ) -> None:
        super().__init__(path, video_root)
        self.video_ext = video_ext
        data = load_records(self.path)
        if answers is not None and not isinstance(answers, dict):
            answers = load_records(answers)  # type: ignore[assignment]
        self._answers: dict[str, Any] = dict(answers or {})  # type: ignore[arg-type]
        if isinstance(data, dict):
            raise _fail(self.path, None, None, "expected a list of question records; an EgoSchema answer map "
                        "({q_uid: index}) goes in answers= next to its questions file")
        self.samples = [s for i, rec in enumerate(data) for s in self._parse(rec, i)]

    def _video(self, name: str) -> str:
        name = name if Path(name).suffix else name + self.video_ext
        return resolve_path(self.video_root, name)

    def _parse(self, rec: Any, i: int) -> list[MultipleChoiceSample]:
        if isinstance(rec, dict) and isinstance(rec.get("questions"), list):  # Video-MME, grouped by video
            vid = str(_require(rec, "video_id", (str, int), self.path, i))
            meta = {f"video_{k}": rec[k] for k in ("duration", "domain", "sub_category") if k in rec}
            return [self._question(q, f"{i}.questions[{k}]", vid, meta) for k, q in enumerate(rec["questions"])]
        if isinstance(rec, dict) and "q_uid" in rec:  # EgoSchema
            options = [rec.get(f"option {k}") for k in range(5)]
            if not all(isinstance(o, str) for o in options):
                raise _fail(self.path, i, "option 0..option 4", "EgoSchema records need five option strings")
            answer = self._answers.get(rec["q_uid"])
            q = {"question": rec.get("question"), "options": options, "answer": answer, "id": rec["q_uid"]}
            return [self._question(q, i, str(rec["q_uid"]), {"source": "egoschema"})]
        video = _require(rec, "video", str, self.path, i)
        return [self._question(rec, i, video, {})]

    def _question(self, q: Any, i: int | str, video: str, meta: dict[str, Any]) -> MultipleChoiceSample:
        question = _require(q, "question", str, self.path, i)  # type: ignore[arg-type]
        key = "options" if "options" in q else "candidates"
        raw = _require(q, key, list, self.path, i)  # type: ignore[arg-type]
        if not 2 <= len(raw) <= len(_LETTERS) or not all(isinstance(o, str) for o in raw):
            raise _fail(self.path, i, key, f"expected 2-{len(_LETTERS)} option strings, got {raw!r}")
        options = [_OPTION_PREFIX_RE.sub("", o, count=1).strip() for o in raw]
        answer = self._letter(q.get("answer"), options, raw, i)
        return MultipleChoiceSample(
            video=self._video(video),
            question=question.strip(),
            options=options,
            answer=answer,
            task=str(q.get("task_type", q.get("task", ""))),
            id=str(q.get("question_id", q.get("id", i))),
            meta={**meta, **({"source_answer": q["answer"]} if key == "candidates" else {})},
        )

    def _letter(self, answer: Any, options: list[str], raw: list[str], i: int | str) -> str | None:
        """Answer as a letter: from a letter, an index, or an option text."""
        if answer is None:
            return None
        if isinstance(answer, int) and 0 <= answer < len(options):
            return _LETTERS[answer]
        if isinstance(answer, str):
            text = answer.strip()
            m = re.fullmatch(r"\(?([A-J])[.):]?", text)
            if m and _LETTERS.index(m.group(1)) < len(options):
                return m.group(1)
            for k, opt in enumerate(options):
                if text in (opt, raw[k].strip()):
                    return _LETTERS[k]
        raise _fail(self.path, i, "answer", f"{answer!r} is not a letter, index or text of the {len(options)} options")

    def conversation(self, index: int) -> ConversationSample:
        """User: question + ``(A) ...`` options + instruction; assistant: the letter (absent when unknown)."""
        s = self.samples[index]
        prompt = f"{VIDEO_PLACEHOLDER}\n{s.question}\n{format_options(s.options)}\n{MC_INSTRUCTION}"
        messages = [{"role": "user", "content": prompt}]
        if s.answer is not None:
            messages.append({"role": "assistant", "content": s.answer})
        return ConversationSample(video=s.video, messages=messages, id=s.id,
                                  meta={"task": s.task, "answer": s.answer, **s.meta})


class PreferenceDataset(AnnotationDataset[PreferenceSample]):
    """Preference pairs: ``{"video", "prompt" (string or messages), "chosen", "rejected", "rejected_video"?}``.

    ``rejected_video`` set = input-side pair (the rejected answer is scored on its own, e.g. perturbed, video).
    ``conversations()`` yields prompt + chosen answer (for SFT warm-up on the chosen side).

    Example:
        >>> ds = PreferenceDataset("pairs.jsonl", video_root="/videos")  # doctest: +SKIP
        >>> ds[0].chosen != ds[0].rejected  # doctest: +SKIP
        True
    """

    def __init__(self, path: str | Path, video_root: str | Path = "", allow_empty: bool = False) -> None:
        super().__init__(path, video_root)
        records = record_list(self.path, load_records(self.path), allow_empty)
        self.samples = [self._parse(rec, i) for i, rec in enumerate(records)]

    def _parse(self, rec: Any, i: int) -> PreferenceSample:
        prompt = _require(rec, "prompt", (str, list), self.path, i)
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        messages = normalise_messages(prompt, self.path, i, "prompt")
        if messages[-1]["role"] == "assistant":
            raise _fail(self.path, i, "prompt", "must end before the answer (last turn is an assistant turn)")
        chosen = _require(rec, "chosen", str, self.path, i)
        rejected = _require(rec, "rejected", str, self.path, i)
        video, rejected_video = rec.get("video"), rec.get("rejected_video")
        for name, value in (("video", video), ("rejected_video", rejected_video)):
            if value is not None and not isinstance(value, str):
                raise _fail(self.path, i, name, f"expected a path string or null, got {type(value).__name__}")
        if rejected_video is not None and video is None:
            raise _fail(self.path, i, "rejected_video", "an input-side pair needs 'video' as well")
        if chosen == rejected and rejected_video is None:
            raise _fail(self.path, i, "rejected", "identical to 'chosen' with the same video: not a preference")
        extra = {k: v for k, v in rec.items() if k not in ("prompt", "chosen", "rejected", "video", "rejected_video")}
        return PreferenceSample(
            video=resolve_path(self.video_root, video) if video else None,
            prompt=messages,
            chosen=chosen,
            rejected=rejected,
            rejected_video=resolve_path(self.video_root, rejected_video) if rejected_video else None,
            id=str(rec.get("id", i)),
            meta={"source": str(self.path), **extra},
        )

    def conversation(self, index: int) -> ConversationSample:
        s = self.samples[index]
        return ConversationSample(video=s.video, messages=[*s.prompt, {"role": "assistant", "content": s.chosen}],
                                  id=s.id, meta={"preference": "chosen", **s.meta})
