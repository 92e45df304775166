"""timm ViTs (EVA-CLIP included) as per-frame :class:`VisionEncoder` s.

The model is built by ``timm.create_model(name, pretrained=False, num_classes=0, **kwargs)`` (no download);
weights load from a local ``.safetensors``/``.pth`` file or a directory holding one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtempo.models.encoders.hf_vision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_grid,
    check_pixels,
    finish_patches,
    meta_buffers,
)
from vidtempo.models.interfaces import VisionEncoder
from vidtempo.utils.imports import require

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.pth",
    "open_clip_model.safetensors",  # open_clip hub layout (image tower under "visual.")
    "open_clip_pytorch_model.bin",
)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a flat state dict from a ``.safetensors`` file or a ``torch.save`` file (unwrapping
    ``state_dict``/``model``/``module`` nesting and a ``module.`` DDP prefix)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:  # memory-mapped: tensors are read when copied into the model
            sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-zip) torch.save format cannot be mapped
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def find_weights_file(path: str | Path, who: str) -> Path:
    """A weights file itself, or the first of :data:`WEIGHT_FILES` inside a directory."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
    raise FileNotFoundError(
        f"{who}.load_pretrained: '{path}' is neither a weights file (.safetensors/.pth/.bin) nor a directory "
        f"holding one of {', '.join(WEIGHT_FILES)}"
    )


class TimmEncoder(VisionEncoder):
    """Any timm ViT-style model (``vit_*``, ``eva02_*``, ``deit_*``, ...) as a per-frame encoder.

    Args:
        model_name: a timm architecture name, e.g. ``eva02_large_patch14_clip_336``.
        pretrained_path: optional local weights file/directory, loaded right after building.
        select_layer: None -> ``forward_features`` (all blocks + final norm, prefix tokens dropped). An int
            indexes block outputs like transformers' ``hidden_states``: -1 last block, -2 penultimate,
            k >= 1 the k-th block (0, the patch embedding, is not available).
        final_norm: with ``select_layer``, apply the model's final norm to the selected block output.
        drop_prefix: drop CLS/register tokens (default). Otherwise they lead the features.
        pool_to: optional (h, w): bilinearly resize the patch grid.
        mean, std: normalisation; default from the model's ``pretrained_cfg``.
        **timm_kwargs: passed to ``timm.create_model`` (``img_size``, ``depth``, ``embed_dim``, ...).

    Example:
        >>> import torch
        >>> enc = TimmEncoder("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32,
        ...                   num_heads=2)
        >>> feats, grid = enc.encode(torch.rand(2, 3, 64, 64))
        >>> tuple(feats.shape), grid
        ((2, 16, 32), (4, 4))
    """

    def __init__(
        self,
        model_name: str,
        pretrained_path: str | Path | None = None,
        *,
        select_layer: int | None = None,
        final_norm: bool = False,
        drop_prefix: bool = True,
        pool_to: Sequence[int] | int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.timm_kwargs = {"num_classes": 0, **timm_kwargs}
        self.model = self._create()
        self.num_prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        img_size = tuple(self.model.patch_embed.img_size)
        if img_size[0] != img_size[1]:
            raise ValueError(
                f"TimmEncoder '{model_name}': only square inputs are supported, got img_size={img_size}"
            )
        self.image_size = int(img_size[0])
        self.native_grid = tuple(int(g) for g in self.model.patch_embed.grid_size)
        self.pool_to = as_grid(pool_to, "TimmEncoder pool_to")
        self.grid = self.pool_to or self.native_grid
        self.out_dim = int(getattr(self.model, "embed_dim", self.model.num_features))
        self.depth = len(self.model.blocks)
        self.block_index = self._block_index(select_layer)
        self.select_layer = select_layer
        self.final_norm = final_norm
        self.drop_prefix = drop_prefix
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        self.mean = tuple(mean or cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(std or cfg.get("std", IMAGENET_STD))
        if pretrained_path is not None:
            self.load_pretrained(pretrained_path)

    def _create(self) -> nn.Module:
        timm = require("timm", why="TimmEncoder builds timm models")
        try:
            return timm.create_model(self.model_name, pretrained=False, **self.timm_kwargs)
        except RuntimeError as err:
            if "Unknown model" not in str(err):
                raise
            close = timm.list_models(f"*{self.model_name.split('_')[0]}*")[:8]
            raise ValueError(
                f"TimmEncoder: unknown timm model '{self.model_name}'; similar: {close}"
            ) from err
        except TypeError as err:
            raise TypeError(f"TimmEncoder '{self.model_name}': bad keyword argument ({err})") from err

    def _block_index(self, select_layer: int | None) -> int | None:
        if select_layer is None:
            return None
        if select_layer == 0 or not -self.depth <= select_layer <= self.depth:
            raise ValueError(
                f"TimmEncoder '{self.model_name}': select_layer={select_layer} must be in -{self.depth}..-1 or "
                f"1..{self.depth} (block outputs; the patch embedding, 0, is not available), or None"
            )
        return select_layer - 1 if select_layer > 0 else self.depth + select_layer

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised -> (N, prefix + h*w, D) tokens of the selected layer."""
        if self.block_index is None:
            return self.model.forward_features(x)
        out = self.model.forward_intermediates(
            x,
            indices=[self.block_index],
            norm=self.final_norm,
            output_fmt="NLC",
            intermediates_only=True,
            return_prefix_tokens=True,
            stop_early=True,
        )
        spatial, prefix = out[0]  # (N, h*w, D), (N, prefix, D)
        return torch.cat([prefix, spatial], dim=1) if prefix is not None else spatial

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixels (N, 3, H, W) in [0, 1] -> ((N, P, D) patch features, (h, w) grid)."""
        check_pixels(pixels, "TimmEncoder")
        dtype = next(self.model.parameters()).dtype
        x = self.preprocess(pixels, self.mean, self.std).to(dtype)
        tokens = self._tokens(x)
        num_prefix = tokens.shape[1] - self.native_grid[0] * self.native_grid[1]
        return finish_patches(tokens, num_prefix, self.native_grid, self.pool_to, not self.drop_prefix)

    # ------------------------------------------------------------------ weights
    # built on the meta device by ``build_video_llm`` when named under ``weights:`` (``empty_init``)
    lean_load = True

    def load_pretrained(self, path_or_file: str | Path | None = None, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> TimmEncoder:  # fmt: skip
        """Load a timm/open_clip state dict from a file or a directory (``model.safetensors``, ...) into ``dtype``
        (default: the parameters' own) on ``device``; a model built under ``empty_init`` is never random-
        initialised.

        A safetensors file whose keys are the model's (timm's own layout, this encoder's ``save_pretrained``) is
        read tensor by tensor straight into the parameters. Otherwise the file is read as a state dict (a
        ``torch.save`` file memory-mapped) and the architecture's own ``checkpoint_filter_fn`` (when timm has one,
        e.g. EVA converting original EVA-CLIP keys) is applied first; tensors are then cast into the parameters
        one by one. Classifier-head weights are dropped since the model has none; loading is strict otherwise.
        Returns ``self``.
        """
        from vidtempo.models.weights import SafetensorsReader, StateDictReader, empty_init, load_weights

        if path_or_file is None:
            raise ValueError("TimmEncoder.load_pretrained needs a weights file or directory")
        file = find_weights_file(path_or_file, "TimmEncoder")
        if meta_buffers(self.model):  # built under ``torch.device("meta")``: rebuild with real buffers
            with empty_init():
                self.model = self._create()
        expected = set(self.model.state_dict())
        reader: Any = SafetensorsReader([file]) if file.suffix == ".safetensors" else None
        if reader is None or not expected <= set(reader.keys()):  # another layout: convert as timm does
            if reader is not None:
                reader.close()
            state = read_state_dict(file)
            filter_fn = getattr(sys.modules[type(self.model).__module__], "checkpoint_filter_fn", None)
            if filter_fn is not None:
                state = filter_fn(state, self.model)
            reader = StateDictReader(state, where=str(file))
            del state
        try:
            load_weights(self.model, reader, dtype=dtype, device=device,
                         rename=lambda k: k if k in expected or not k.startswith("head") else None)  # fmt: skip
        except ValueError as err:
            raise ValueError(f"{file}: weights do not fit timm model '{self.model_name}': {err}") from None
        finally:
            reader.close()
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``model.safetensors`` and a ``config.json`` naming the timm architecture and its kwargs."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self.model, str(path / "model.safetensors"))
        config = {"architecture": self.model_name, "model_args": self.timm_kwargs}
        (path / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, image_size={self.image_size}, grid={self.grid}"
