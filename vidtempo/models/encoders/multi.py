"""Several vision towers side by side (TDC/Cambrian use SigLIP + DINOv2): each tower's patch grid is
resized to one common grid and the features are concatenated along the channel axis.

This is a simpler aggregator than the released TDC code's SVA connector (learned queries cross-attending
to local windows of both towers); the difference is documented in docs/methods/tdc.md.

Example:
    >>> import torch
    >>> from vidtempo.models.encoders.presets import tiny_vision_encoder
    >>> enc = ConcatEncoder([tiny_vision_encoder(), tiny_vision_encoder()], grid=(2, 2))
    >>> feats, grid = enc.encode(torch.rand(3, 3, 32, 32))
    >>> tuple(feats.shape), grid, enc.out_dim
    ((3, 4, 64), (2, 2), 64)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtempo.models.interfaces import VisionEncoder


class ConcatEncoder(VisionEncoder):
    """Concatenate the (resized) patch features of several towers.

    Args:
        towers: the vision encoders (each resizes and normalises frames itself).
        grid: the common (h, w) patch grid; default the first tower's.
        tower_names: names used by ``load_pretrained`` (default ``tower0``, ``tower1``, ...).
    """

    def __init__(
        self, towers: Sequence[VisionEncoder], grid: Sequence[int] | None = None,
        tower_names: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if not towers:
            raise ValueError("ConcatEncoder needs at least one tower")
        self.towers = nn.ModuleList(towers)
        self.tower_names = list(tower_names or [f"tower{i}" for i in range(len(towers))])
        if len(self.tower_names) != len(towers):
            raise ValueError(f"{len(self.tower_names)} tower_names for {len(towers)} towers")
        self.grid = tuple(int(g) for g in grid) if grid is not None else None
        self.out_dim = sum(int(t.out_dim) for t in towers)
        self.image_size = max(int(t.image_size) for t in towers)

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixels (N, 3, H, W) -> ((N, h*w, sum D_i), (h, w))."""
        outs, target = [], self.grid
        for tower in self.towers:
            feats, (h, w) = tower.encode(pixels)  # (N, h*w, D_i)
            target = target or (h, w)
            if (h, w) != tuple(target):
                x = feats.transpose(1, 2).reshape(feats.shape[0], -1, h, w)
                x = nn.functional.interpolate(x, size=tuple(target), mode="bilinear", align_corners=False)
                feats = x.flatten(2).transpose(1, 2)
            outs.append(feats)
        assert target is not None
        return torch.cat(outs, dim=-1), (int(target[0]), int(target[1]))

    lean_load = True  # when ``weights:`` names every tower (``lean_for``): built on meta, each tower loaded lean

    @classmethod
    def lean_for(cls, node: dict[str, Any], sources: Any, is_lean: Callable[[Any], bool]) -> bool:
        """Whether ``build_video_llm`` may build this recipe node on the meta device for ``sources``: only when
        they name every tower (a tower left out keeps its random init, which a meta build would not have) and
        every tower node loads all of its parameters itself (``is_lean``)."""
        towers = list(node.get("towers") or [])
        names = list(node.get("tower_names") or [f"tower{i}" for i in range(len(towers))])
        return (isinstance(sources, dict) and bool(towers) and set(sources) == set(names)
                and all(is_lean(t) for t in towers))  # fmt: skip

    def load_pretrained(self, sources: dict[str, str | Path] | None = None, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> None:  # fmt: skip
        """``{tower_name: path}``: load each named tower's weights (others keep theirs); ``dtype`` / ``device`` go
        to the towers that load lean (``lean_load``)."""
        for name, path in (sources or {}).items():
            if name not in self.tower_names:
                raise ValueError(f"ConcatEncoder has no tower '{name}'; towers: {', '.join(self.tower_names)}")
            tower = self.towers[self.tower_names.index(name)]
            if getattr(tower, "lean_load", False):
                tower.load_pretrained(path, dtype=dtype, device=device)
            else:
                tower.load_pretrained(path)

    def unused_parameter_names(self) -> set[str]:
        names = set()
        for i, tower in enumerate(self.towers):
            if hasattr(tower, "unused_parameter_names"):
                names |= {f"towers.{i}.{n}" for n in tower.unused_parameter_names()}
        return names
