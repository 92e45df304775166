"""On-disk store of decoded clips (frames as decoded, timestamps, audio or its log-mel), shared by processes.

The collator's in-memory cache (``cache_decoded``) keeps each clip a process decoded, for every later epoch.
Several training processes (DDP ranks, each with its own DataLoader worker) would still each decode every clip
once; with a store, a clip one process decoded is read by the others (and by a resumed run) instead. Entries
are ``<key[:2]>/<key>.safetensors``, written atomically (a temp file, then ``os.replace``), so two processes
writing the same clip leave one whole entry. The key hashes everything the content depends on: the video and
audio paths with their size and modification time, the clip bounds and the collator's sampling and audio
settings; a changed video gets a new key and its old entry is never read.

Frames are stored as the decoder's uint8 (T, H, W, 3), so a clip read back is bit-identical to a fresh decode.

Example:
    >>> import tempfile, torch
    >>> store = ClipStore(tempfile.mkdtemp())
    >>> key = store.key(video=__file__, audio=None, start=None, end=None, settings={"num_frames": 4})
    >>> store.get(key) is None
    True
    >>> clip = StoredClip(torch.zeros(4, 8, 8, 3, dtype=torch.uint8), torch.arange(4.0), None, None, 2.0)
    >>> _ = store.put(key, clip)
    >>> store.get(key).frames.shape, store.get(key).duration
    (torch.Size([4, 8, 8, 3]), 2.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vidtempo.data.feature_cache import content_key, entry_path


@dataclass
class StoredClip:
    """frames (T, H, W, 3) uint8 as decoded; timestamps (T,) s; audio (S,) waveform or (n_mels, F) log-mel, or
    None; audio_length: samples behind a log-mel (None for a waveform or no audio); duration: the file's seconds
    (None when unknown)."""

    frames: torch.Tensor
    timestamps: torch.Tensor
    audio: torch.Tensor | None
    audio_length: int | None
    duration: float | None


def _stat(path: str | None) -> dict[str, Any] | None:
    if not path or not os.path.exists(path):
        return None
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class ClipStore:
    """A folder of decoded clips (see the module docstring); ``get`` returns None for a missing entry."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, *, video: str, audio: str | None, start: float | None, end: float | None,
            settings: dict[str, Any]) -> str:  # fmt: skip
        ident = {"video": _stat(video) or os.path.abspath(video), "audio": _stat(audio), "start": start, "end": end,
                 "settings": settings}  # fmt: skip
        return content_key(ident)

    def path(self, key: str) -> Path:
        return entry_path(self.root, key)

    def get(self, key: str) -> StoredClip | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: unreadable decoded-clip entry ({err}); delete it and it is decoded again") from err
        meta = data["meta"].tolist()  # [audio_length (-1: none), duration (NaN: unknown)]
        length, duration = int(meta[0]), float(meta[1])
        return StoredClip(data["frames"], data["timestamps"], data.get("audio"), length if length >= 0 else None,
                          None if duration != duration else duration)  # fmt: skip

    def put(self, key: str, clip: StoredClip) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        meta = [float(clip.audio_length if clip.audio_length is not None else -1),
                float(clip.duration if clip.duration is not None else float("nan"))]  # fmt: skip
        tensors = {"frames": clip.frames.contiguous().cpu(), "timestamps": clip.timestamps.float().cpu(),
                   "meta": torch.tensor(meta, dtype=torch.float64)}  # fmt: skip
        if clip.audio is not None:
            tensors["audio"] = clip.audio.contiguous().cpu()
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        return path
