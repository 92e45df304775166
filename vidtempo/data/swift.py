"""ms-swift preference records (DPO / RLHF) as :class:`~vidtempo.data.samples.PreferenceSample`.

ms-swift's standard dataset keys (its "Custom dataset" page): ``messages`` (chat turns, the last one the
preferred assistant answer), ``rejected_response`` (the dispreferred answer to the same prompt), ``videos`` /
``images`` (media paths), and since ms-swift 3.8 ``rejected_messages`` with ``rejected_videos`` /
``rejected_images`` for a rejected side that differs in more than its answer. The TEMPLE release
(lscpku/TEMPLE ``convert_to_swift.py``) writes one JSON list of such records per perturbation magnitude:

    {"messages": [{"role": "user", "content": "<video>Describe the video in detail."},
                  {"role": "assistant", "content": "<caption of the intact video>"}],
     "rejected_response": "<caption written from the time-perturbed video>",
     "videos": ["/data/lv178k/.../clip.mp4"]}

in files named ``<model>_i0_r<magnitude>.json`` (``qwen25vl7b_i0_r16.json``, ``..._r8.json``, ...).
:class:`SwiftPreferenceDataset` reads one such file or several, and sets ``meta["magnitude"]`` from the
``_r<N>`` at the end of each file name (or from ``magnitude``), which is what the DPO curriculum's
``MagnitudeFilter`` reads to make one stage per level.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "qwen25vl7b_i0_r8.json"
    >>> _ = path.write_text(json.dumps([{"messages": [{"role": "user", "content": "<video>Describe it."},
    ...     {"role": "assistant", "content": "A red ball, then a blue one."}],
    ...     "rejected_response": "A blue ball, then a red one.", "videos": ["a.mp4"]}]))
    >>> ds = SwiftPreferenceDataset(path, video_root="/videos")
    >>> ds[0].video, ds[0].chosen, ds[0].rejected, ds[0].meta["magnitude"]
    ('/videos/a.mp4', 'A red ball, then a blue one.', 'A blue ball, then a red one.', 8)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidtempo.data.datasets import (
    AnnotationDataset,
    _fail,
    load_records,
    media_path,
    normalise_messages,
    record_list,
    resolve_path,
)
from vidtempo.data.samples import ConversationSample, PreferenceSample

MAGNITUDE_RE = re.compile(r"_r(\d+)$")  # TEMPLE: <model>_i0_r16.json -> 16


def magnitude_of(path: str | Path) -> int | None:
    """The perturbation magnitude a TEMPLE file name carries (``..._r16.json`` -> 16), else None.

    Example:
        >>> magnitude_of("swift_data/qwen25vl7b_i0_r16.json"), magnitude_of("qwen25vl7b_i0_r16-8-4-2.json")
        (16, None)
    """
    match = MAGNITUDE_RE.search(Path(path).stem)
    return int(match.group(1)) if match else None


class SwiftPreferenceDataset(AnnotationDataset[PreferenceSample]):
    """Preference pairs from ms-swift DPO files (JSON list or JSONL), one file or several.

    Args:
        path: one file, or a list of files (TEMPLE: one per magnitude, ``[.._r16.json, .._r8.json, ...]``).
        video_root: relative media paths are joined to it.
        magnitude: ``meta["magnitude"]`` of every pair; None = from each file name's ``_r<N>`` suffix (a
            file without one, e.g. TEMPLE's combined ``_r16-8-4-2.json``, gives pairs without a magnitude: fine
            for one DPO stage, an error naming the pair in a curriculum).
        allow_empty: accept a file without records.

    A pair's prompt is ``messages`` without its last turn, which must be the assistant's (the chosen answer).
    The rejected answer is ``rejected_response``, or the last turn of ``rejected_messages`` (whose earlier
    turns must equal the prompt: the two sides of a vidtempo pair share their prompt). ``rejected_videos`` /
    ``rejected_images`` make an input-side pair (the rejected answer is scored on its own video); an image is
    a 1-frame video. Pair ids: the record's ``id``, else ``<file stem>#<index>``.

    Example:
        >>> ds = SwiftPreferenceDataset(["swift_data/qwen25vl7b_i0_r16.json", "swift_data/qwen25vl7b_i0_r8.json"],
        ...                             video_root="data")  # doctest: +SKIP
        >>> sorted({p.meta["magnitude"] for p in ds})  # doctest: +SKIP
        [8, 16]
    """

    def __init__(
        self, path: str | Path | Sequence[str | Path], video_root: str | Path = "", magnitude: int | None = None,
        allow_empty: bool = False,
    ) -> None:  # fmt: skip
        paths = [Path(p) for p in ([path] if isinstance(path, (str, Path)) else path)]
        if not paths:
            raise ValueError("SwiftPreferenceDataset: path is an empty list; expected one file or several")
        super().__init__(paths[0], video_root)
        self.paths = paths
        self.samples = []
        for file in paths:
            level = magnitude if magnitude is not None else magnitude_of(file)
            records = record_list(file, load_records(file), allow_empty)
            self.samples += [self._parse(file, rec, i, level) for i, rec in enumerate(records)]

    def _parse(self, file: Path, rec: Any, i: int, level: int | None) -> PreferenceSample:
        if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
            raise _fail(file, i, "messages", "missing; expected ms-swift's [{'role', 'content'}, ...] ending with "
                        "the chosen assistant answer")  # fmt: skip
        messages = normalise_messages(rec["messages"], file, i, "messages")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise _fail(file, i, "messages", "the last turn must be the chosen assistant answer after a prompt")
        prompt, chosen = messages[:-1], messages[-1]["content"]
        rejected = self._rejected(file, rec, i, prompt)
        video, _ = media_path(rec, file, i)
        rejected_video, _ = media_path({k[len("rejected_"):]: v for k, v in rec.items()
                                        if k in ("rejected_videos", "rejected_images")}, file, i)  # fmt: skip
        if rejected_video is not None and video is None:
            raise _fail(file, i, "rejected_videos", "an input-side pair needs 'videos' (or 'images') as well")
        if chosen == rejected and rejected_video in (None, video):
            raise _fail(file, i, "rejected_response", "identical to the chosen answer with the same video: "
                        "not a preference")  # fmt: skip
        keep = ("messages", "rejected_response", "rejected_messages", "videos", "images", "video", "image",
                "rejected_videos", "rejected_images")  # fmt: skip
        extra = {k: v for k, v in rec.items() if k not in keep}
        meta = {"source": str(file), **extra}
        if level is not None:
            meta.setdefault("magnitude", level)
        return PreferenceSample(
            video=resolve_path(self.video_root, video) if video else None,
            prompt=prompt,
            chosen=chosen,
            rejected=rejected,
            rejected_video=resolve_path(self.video_root, rejected_video) if rejected_video else None,
            id=str(rec.get("id", f"{file.stem}#{i}")),
            meta=meta,
        )

    @staticmethod
    def _rejected(file: Path, rec: dict[str, Any], i: int, prompt: list[dict[str, str]]) -> str:
        if isinstance(rec.get("rejected_response"), str):
            return rec["rejected_response"]
        if "rejected_response" in rec:
            raise _fail(file, i, "rejected_response", f"expected a string, got {type(rec['rejected_response']).__name__}")
        if not isinstance(rec.get("rejected_messages"), list):
            raise _fail(file, i, "rejected_response", "missing; expected the rejected answer (or 'rejected_messages')")
        other = normalise_messages(rec["rejected_messages"], file, i, "rejected_messages")
        if other[-1]["role"] != "assistant" or other[:-1] != prompt:
            raise _fail(file, i, "rejected_messages", "must be the same prompt as 'messages' followed by the "
                        "rejected assistant answer")  # fmt: skip
        return other[-1]["content"]

    def conversation(self, index: int) -> ConversationSample:
        """Prompt + chosen answer (an SFT warm-up on the chosen side)."""
        s = self.samples[index]
        return ConversationSample(video=s.video, messages=[*s.prompt, {"role": "assistant", "content": s.chosen}],
                                  id=s.id, meta={"preference": "chosen", **s.meta})
