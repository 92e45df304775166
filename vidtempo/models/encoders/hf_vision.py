"""transformers vision towers (SigLIP, CLIP, DINOv2) as per-frame :class:`VisionEncoder` s.

Each encoder builds a randomly initialised tower from a config (a dict of keyword arguments for the
transformers config class, and/or a local directory holding ``config.json``) and never downloads. Weights
come in one explicit step: :meth:`HFVisionEncoder.load_pretrained` on a local directory written by
``save_pretrained`` or a hub snapshot (a full ``SiglipModel``/``CLIPModel`` checkpoint works: the text
tower is ignored).

The helpers at the top (:func:`check_pixels`, :func:`finish_patches`, :func:`resize_grid`) are shared with
the timm and CNN encoders; this module imports ``transformers`` only when a tower is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vidtempo.models.interfaces import VisionEncoder

# Normalisation constants, cited from the preprocessor_config.json of the public checkpoints:
# SigLIP (google/siglip-so400m-patch14-384): mean = std = 0.5.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
# OpenAI CLIP (openai/clip-vit-large-patch14-336; also EVA-CLIP in timm's pretrained_cfg).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet (facebook/dinov2-giant).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- helpers
def check_pixels(pixels: torch.Tensor, who: str) -> None:
    """Raise ``ValueError`` unless ``pixels`` is a (N, 3, H, W) uint8 (0-255) or float ([0, 1]) tensor."""
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or pixels.shape[1] != 3:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"{who}.encode expects pixels of shape (N, 3, H, W), got {shape}")
    if not (pixels.is_floating_point() or pixels.dtype == torch.uint8):
        raise ValueError(f"{who}.encode expects uint8 pixels (0-255) or float pixels in [0, 1], got dtype {pixels.dtype}")


def as_grid(value: Sequence[int] | int | None, name: str) -> tuple[int, int] | None:
    """Normalise a recipe value (``[h, w]``, ``(h, w)``, an int for a square grid, or None) to a tuple."""
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    grid = tuple(int(v) for v in value)
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"{name} must be a pair of positive ints (h, w), got {value!r}")
    return grid  # type: ignore[return-value]


def resize_grid(patches: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly interpolate a patch grid: (N, h*w, D) -> (N, size[0]*size[1], D).

    TDC resizes SigLIP/DINOv2's 27x27 grids to 24x24 this way (``docs/methods/tdc.md``).
    """
    if tuple(grid) == tuple(size):
        return patches
    n, p, d = patches.shape
    if p != grid[0] * grid[1]:
        raise ValueError(f"resize_grid: {p} patches do not form a {grid[0]}x{grid[1]} grid")
    x = patches.transpose(1, 2).reshape(n, d, grid[0], grid[1])  # (N, D, h, w)
    x = nn.functional.interpolate(x.float(), size=size, mode="bilinear", align_corners=False).to(
        patches.dtype
    )
    return x.flatten(2).transpose(1, 2)  # (N, h'*w', D)


def finish_patches(
    tokens: torch.Tensor,
    num_prefix: int,
    grid: tuple[int, int],
    pool_to: tuple[int, int] | None,
    keep_prefix: bool,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split prefix tokens (CLS, registers) from a ViT's (N, prefix + h*w, D) output, resize the grid.

    Returns ``((N, P, D) features, (h, w))``; with ``keep_prefix`` the prefix tokens lead, ``P = prefix + h*w``.
    """
    prefix, patches = tokens[:, :num_prefix], tokens[:, num_prefix:]
    if pool_to is not None:
        patches = resize_grid(patches, grid, pool_to)
        grid = pool_to
    if keep_prefix and num_prefix:
        patches = torch.cat([prefix, patches], dim=1)
    return patches, grid


def is_meta(module: nn.Module) -> bool:
    """True when any parameter of ``module`` lives on the meta device."""
    return any(p.is_meta for p in module.parameters())


def meta_buffers(module: nn.Module) -> bool:
    """True when a buffer of ``module`` is on the meta device (built under ``torch.device("meta")``: buffers
    computed in constructors, e.g. position ids, hold nothing, so loading parameters alone is not enough)."""
    return any(b.is_meta for b in module.buffers())


def _transformers_attr(name: str) -> Any:
    import transformers  # heavy: only when a tower is built

    return getattr(transformers, name)


def build_hf_config(
    config_cls: Any, config: Mapping[str, Any] | None, name_or_path: str | Path | None, who: str
) -> Any:
    """A transformers config: read offline from ``name_or_path`` (if given), then ``config`` overrides.

    Unknown keys in ``config`` raise ``ValueError`` (transformers would silently keep them).
    """
    config = dict(config or {})
    if config:
        default = config_cls()
        unknown = sorted(k for k in config if k not in default.to_dict() and not hasattr(default, k))
        if unknown:
            valid = ", ".join(sorted(k for k in default.to_dict() if not k.startswith("_")))
            raise ValueError(
                f"{who}: unknown config key(s) {unknown} for {config_cls.__name__}; valid keys: {valid}"
            )
    if name_or_path is None:
        return config_cls(**config)
    try:  # keyword arguments of from_pretrained override the stored attributes
        return config_cls.from_pretrained(str(name_or_path), local_files_only=True, **config)
    except OSError as err:
        raise FileNotFoundError(
            f"{who}: cannot read a {config_cls.__name__} from '{name_or_path}' offline ({err}). "
            "Pass a local directory holding config.json, or give the architecture as `config`."
        ) from err


def check_weights_dir(path: str | Path, who: str) -> Path:
    """Return ``path`` as a Path (a hub id already in the local Hugging Face cache: its snapshot directory), or
    raise ``FileNotFoundError`` unless it is a directory with config.json."""
    from vidtempo.models.weights import cached_snapshot

    local = Path(path)
    if not local.is_dir():
        try:
            local = cached_snapshot(str(path))
        except FileNotFoundError:
            pass
    if not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"{who}.load_pretrained: '{path}' is neither a local model directory (expected config.json plus "
            "*.safetensors or pytorch_model.bin, as written by save_pretrained or a downloaded hub snapshot) nor "
            "a hub id in the local cache"
        )
    return local


def check_same_arch(ours: Any, theirs: Any, keys: Sequence[str], path: Path, who: str) -> None:
    """Raise ``ValueError`` naming the first architecture field where two configs differ."""
    for key in keys:
        a, b = getattr(ours, key, None), getattr(theirs, key, None)
        if a != b:
            raise ValueError(
                f"{who}.load_pretrained: {path / 'config.json'} has {key}={b!r} but this encoder was built "
                f"with {key}={a!r}; build it from the same architecture (e.g. name_or_path='{path}')"
            )


TOWER_PREFIXES = ("", "model.", "dinov2.", "vision_tower.", "model.vision_tower.")  # composite checkpoints


def tower_key_map(checkpoint_keys: Sequence[str], tower: nn.Module) -> dict[str, str | list[str]]:
    """Checkpoint key -> tower key(s) for the checkpoint tensors that belong to ``tower`` (a transformers model):
    its own keys, or the same keys under the first of :data:`TOWER_PREFIXES` that holds any (the vision half of a
    full SigLIP / CLIP model has them as is; a DINOv2 classifier under ``dinov2.``), after transformers' key
    conversions (``weights.transformers_key_map``). Other tensors are left out (not read).
    """
    from vidtempo.models.weights import transformers_key_map

    wanted = set(tower.state_dict())
    for prefix in TOWER_PREFIXES:
        keys = [k for k in checkpoint_keys if k.startswith(prefix)]
        converted = transformers_key_map(tower, [k[len(prefix) :] for k in keys])
        found = {p + k: v for p, k, v in ((prefix, k[len(prefix) :], converted[k[len(prefix) :]]) for k in keys)
                 if (set(v) if isinstance(v, list) else {v}) <= wanted}  # fmt: skip
        if found:
            return found
    return {}


# --------------------------------------------------------------------------------------------- towers
class HFVisionEncoder(VisionEncoder):
    """Shared implementation of the transformers towers; use a subclass (``SiglipEncoder``, ...).

    Attributes:
        tower: the transformers vision model.
        out_dim: feature width D (the tower's ``hidden_size``).
        image_size: side of the square input the frames are resized to.
        grid: (h, w) patch grid of the output (after ``pool_to``).
    """

    model_class: ClassVar[str]  # transformers model class name
    config_class: ClassVar[str]  # transformers config class name
    num_prefix: ClassVar[int] = 0  # CLS tokens ahead of the patches
    default_mean: ClassVar[tuple[float, float, float]]
    default_std: ClassVar[tuple[float, float, float]]
    arch_keys: ClassVar[tuple[str, ...]] = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
    )

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        name_or_path: str | Path | None = None,
        *,
        select_layer: int = -1,
        drop_cls: bool = True,
        pool_to: Sequence[int] | int | None = None,
        image_size: int | None = None,
        final_norm: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        cfg = build_hf_config(_transformers_attr(self.config_class), config, name_or_path, who)
        self.tower = _transformers_attr(self.model_class)(cfg)
        self.name_or_path = None if name_or_path is None else str(name_or_path)
        num_states = cfg.num_hidden_layers + 1  # hidden_states = (embeddings, layer 1, ..., layer L)
        if not -num_states <= select_layer < num_states:
            raise ValueError(
                f"{who}: select_layer={select_layer} is out of range for {cfg.num_hidden_layers} layers "
                f"(hidden_states has {num_states} entries: use -{num_states}..{num_states - 1})"
            )
        self.select_layer = select_layer
        self.drop_cls = drop_cls
        self.final_norm = final_norm
        self.out_dim = int(cfg.hidden_size)
        self.patch_size = int(cfg.patch_size)
        self.image_size = int(image_size or cfg.image_size)
        if self.image_size < self.patch_size:
            raise ValueError(
                f"{who}: image_size={self.image_size} is smaller than patch_size={self.patch_size}"
            )
        self.native_grid = (self.image_size // self.patch_size,) * 2
        self.pool_to = as_grid(pool_to, f"{who} pool_to")
        self.grid = self.pool_to or self.native_grid
        self.mean = tuple(mean or self.default_mean)
        self.std = tuple(std or self.default_std)

    # ------------------------------------------------------------------ forward
    def _forward_kwargs(self) -> dict[str, Any]:
        if self.image_size != self.tower.config.image_size:
            return {"interpolate_pos_encoding": True}  # SigLIP/CLIP have fixed position tables
        return {}

    def _final_norm_module(self) -> nn.Module:
        for owner in (getattr(self.tower, "vision_model", None), self.tower):
            for name in ("post_layernorm", "layernorm"):
                module = getattr(owner, name, None) if owner is not None else None
                if isinstance(module, nn.Module):
                    return module
        raise AttributeError(f"{type(self).__name__}: the tower has no final layer norm to apply")

    @property
    def _keep_prefix(self) -> bool:
        return not self.drop_cls

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """pixels (N, 3, H, W) in [0, 1] -> ((N, P, D) patch features, (h, w) grid)."""
        check_pixels(pixels, type(self).__name__)
        dtype = next(self.tower.parameters()).dtype
        x = self.preprocess(pixels, self.mean, self.std).to(dtype)  # (N, 3, S, S)
        out = self.tower(pixel_values=x, output_hidden_states=True, **self._forward_kwargs())
        tokens = out.hidden_states[self.select_layer]  # (N, prefix + h*w, D)
        if self.final_norm:
            tokens = self._final_norm_module()(tokens)
        return finish_patches(tokens, self.num_prefix, self.native_grid, self.pool_to, self._keep_prefix)

    def unused_parameter_names(self) -> set[str]:
        """Parameters that never reach the features (pooling head, final norm unless ``final_norm``, blocks
        after ``select_layer``): kept frozen so a trainable tower works under DDP without unused-param search."""
        num_states = int(self.tower.config.num_hidden_layers) + 1
        keep_blocks = self.select_layer % num_states  # hidden_states[k] is the output of block k-1
        unused = set()
        for name, _ in self.named_parameters():
            block = re.search(r"\.layers?\.(\d+)\.", name)
            if block and int(block.group(1)) >= keep_blocks:
                unused.add(name)
            elif ".head." in name or "post_layernorm." in name or name.startswith("tower.layernorm."):
                if not (self.final_norm and "head." not in name):
                    unused.add(name)
        return unused

    # ------------------------------------------------------------------ weights
    # ``build_video_llm`` builds a tower named under ``weights:`` on the meta device (``empty_init``): every
    # parameter is filled by ``load_pretrained``, straight in its target dtype
    lean_load = True

    def load_pretrained(self, path_or_dir: str | Path | None = None, *, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> HFVisionEncoder:  # fmt: skip
        """Load weights from a local transformers directory (``save_pretrained`` output or hub snapshot; default
        ``name_or_path``), tensor by tensor into ``dtype`` (default: the parameters' own) on ``device``
        (``vidtempo.models.weights``): a tower built under ``empty_init`` is never random-initialised and never
        held twice; a materialised one is overwritten in place.

        The architecture must match the one this encoder was built with; every tower weight must be in the
        checkpoint (a missing key raises instead of staying random); the checkpoint's other tensors (the text
        tower of a full ``SiglipModel`` / ``CLIPModel``) are not read. Returns ``self``.
        """
        from vidtempo.models.weights import checkpoint_files, empty_init, load_weights, open_reader

        who = type(self).__name__
        source = path_or_dir if path_or_dir is not None else self.name_or_path
        if source is None:
            raise ValueError(f"{who}.load_pretrained needs a path (this tower was built from a config only)")
        path = check_weights_dir(source, who)
        theirs = build_hf_config(_transformers_attr(self.config_class), None, path, who)
        check_same_arch(self.tower.config, theirs, self.arch_keys, path, who)
        if meta_buffers(self.tower):  # built under ``torch.device("meta")`` (inspection): rebuild, buffers real
            with empty_init():
                self.tower = _transformers_attr(self.model_class)(self.tower.config)
        files = checkpoint_files(path)
        reader = open_reader(files)
        try:
            rename = tower_key_map(reader.keys(), self.tower)
        finally:
            reader.close()
        try:
            load_weights(self.tower, files, dtype=dtype, device=device, rename=rename.get,
                         optional=lambda k: k.endswith("position_ids"))  # fmt: skip
        except ValueError as err:
            raise ValueError(f"{who}.load_pretrained: {err}") from None
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write the tower as a transformers directory (config.json + model.safetensors)."""
        self.tower.save_pretrained(str(path))

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, grid={self.grid}, out_dim={self.out_dim}, "
            f"select_layer={self.select_layer}"
        )


class SiglipEncoder(HFVisionEncoder):
    """SigLIP vision tower (transformers ``SiglipVisionModel``); SigLIP has no CLS token.

    Args:
        config: keyword arguments for ``SiglipVisionConfig`` (override those read from ``name_or_path``).
        name_or_path: a local directory whose config.json gives the architecture (no weights are read).
        select_layer: index into ``hidden_states`` (-1 last layer, -2 penultimate as in LLaVA).
        pool_to: optional (h, w): bilinearly resize the patch grid (TDC: 27x27 -> 24x24).
        image_size: input side; defaults to the config's (position embeddings are interpolated otherwise).
        final_norm: apply the tower's ``post_layernorm`` to the selected hidden state.
        mean, std: normalisation; default SigLIP's 0.5/0.5.

    Example:
        >>> import torch
        >>> enc = SiglipEncoder({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        ...                      "num_attention_heads": 2, "image_size": 32, "patch_size": 8})
        >>> feats, grid = enc.encode(torch.rand(3, 3, 40, 40))
        >>> tuple(feats.shape), grid
        ((3, 16, 32), (4, 4))
    """

    model_class = "SiglipVisionModel"
    config_class = "SiglipVisionConfig"
    num_prefix = 0
    default_mean = SIGLIP_MEAN
    default_std = SIGLIP_STD

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        name_or_path: str | Path | None = None,
        *,
        select_layer: int = -1,
        pool_to: Sequence[int] | int | None = None,
        image_size: int | None = None,
        final_norm: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            config,
            name_or_path,
            select_layer=select_layer,
            drop_cls=True,
            pool_to=pool_to,
            image_size=image_size,
            final_norm=final_norm,
            mean=mean,
            std=std,
        )


class ClipEncoder(HFVisionEncoder):
    """CLIP vision tower (transformers ``CLIPVisionModel``), OpenAI normalisation.

    Args are those of :class:`SiglipEncoder` plus ``drop_cls`` (default True). With ``drop_cls=False`` the
    CLS token leads the features, so ``P = 1 + h*w``.

    Example:
        >>> import torch
        >>> enc = ClipEncoder({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        ...                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8}, select_layer=-2)
        >>> feats, grid = enc.encode(torch.rand(2, 3, 32, 32))
        >>> tuple(feats.shape), grid
        ((2, 16, 32), (4, 4))
    """

    model_class = "CLIPVisionModel"
    config_class = "CLIPVisionConfig"
    num_prefix = 1
    default_mean = OPENAI_CLIP_MEAN
    default_std = OPENAI_CLIP_STD


class Dinov2Encoder(HFVisionEncoder):
    """DINOv2 backbone (transformers ``Dinov2Model``), ImageNet normalisation, any input size.

    Args are those of :class:`ClipEncoder`. DINOv2 interpolates its position embeddings, so
    ``image_size`` may differ from the config's (TDC runs DINOv2-giant at 378 -> a 27x27 grid).

    Example:
        >>> import torch
        >>> enc = Dinov2Encoder({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        ...                      "patch_size": 8, "image_size": 32}, image_size=48, pool_to=(4, 4))
        >>> feats, grid = enc.encode(torch.rand(2, 3, 48, 48))
        >>> tuple(feats.shape), grid
        ((2, 16, 32), (4, 4))
    """

    model_class = "Dinov2Model"
    config_class = "Dinov2Config"
    num_prefix = 1
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD

    def _forward_kwargs(self) -> dict[str, Any]:
        return {}  # Dinov2Embeddings always interpolates to the input size
