"""On-disk cache of per-frame features from a frozen vision encoder.

An entry's key hashes everything its content depends on: the video path, its size and modification time,
the clip bounds, the sampling settings, the frame size, the decoder and the encoder's identity (class and a
digest of its weights). A changed video or encoder therefore has a different key: stale entries are never
reused, ``vidtempo cache`` computes the new ones.

Example:
    >>> import tempfile, torch
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> key = cache.key(video=__file__, settings={"num_frames": 4}, encoder_id="enc")
    >>> cache.get(key) is None
    True
    >>> _ = cache.put(key, CachedFeatures(torch.zeros(4, 16, 8), torch.arange(4.0), (4, 4)))
    >>> cache.get(key).grid
    (4, 4)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


@dataclass
class CachedFeatures:
    """feats (T, P, D), timestamps (T,) seconds, grid (h, w)."""

    feats: torch.Tensor
    timestamps: torch.Tensor
    grid: tuple[int, int]


def encoder_fingerprint(module: torch.nn.Module) -> str:
    """Class path + digest of every parameter and buffer (name, shape, dtype, bytes)."""
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.device.type != "meta":
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def content_key(ident: dict[str, Any]) -> str:
    """The SHA-256 of an entry's identity (JSON, sorted keys): the key of a content-addressed store."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def entry_path(root: Path, key: str) -> Path:
    """Where a store under ``root`` keeps the entry ``key`` (fanned out by its first two hex digits)."""
    return root / key[:2] / f"{key}.safetensors"


class FeatureCache:
    """A folder of ``<key[:2]>/<key>.safetensors`` entries, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, *, video: str, settings: dict[str, Any], encoder_id: str, start: float | None = None,
            end: float | None = None) -> str:  # fmt: skip
        stat = os.stat(video) if os.path.exists(video) else None
        ident = {
            "video": os.path.abspath(video), "size": stat.st_size if stat else None,
            "mtime_ns": stat.st_mtime_ns if stat else None, "start": start, "end": end,
            "settings": settings, "encoder": encoder_id,
        }  # fmt: skip
        return content_key(ident)

    def path(self, key: str) -> Path:
        return entry_path(self.root, key)

    def get(self, key: str) -> CachedFeatures | None:
        path = self.path(key)
        if not path.is_file():
            return None
        data = load_file(str(path))
        grid = tuple(int(v) for v in data["grid"].tolist())
        return CachedFeatures(data["feats"], data["timestamps"], (grid[0], grid[1]))

    def put(self, key: str, entry: CachedFeatures) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tensors = {"feats": entry.feats.contiguous().cpu(), "timestamps": entry.timestamps.float().cpu(),
                   "grid": torch.tensor(entry.grid)}  # fmt: skip
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        return path
