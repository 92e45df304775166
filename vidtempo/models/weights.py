"""Lean model building: parameters on the meta device, weights read tensor by tensor straight into their target
dtype and device.

Building a pretrained part the plain way (random init in fp32, then ``from_pretrained`` builds a second fp32
copy and ``load_state_dict`` copies it over) costs about 4x the bf16 weight bytes of host memory and minutes of
CPU init for a 7 B LLM. Here:

* :func:`empty_init` builds a module with every parameter on the meta device (no memory, no random init);
  buffers stay real, so non-persistent ones computed in constructors (rotary ``inv_freq``) are right;
* :func:`load_weights` fills each parameter from the checkpoint's ``*.safetensors`` files: every tensor is read
  with plain file reads (no mmap, so no file pages count against the process) directly into its final tensor,
  converted chunk by chunk (<= 64 MiB of scratch) when the file's dtype or device differ. Peak host memory is
  the weights in the target dtype plus one chunk. Tied weights stay tied (a tensor shared under two names is
  read once).

The safetensors layout (8-byte little-endian header length, a JSON header of ``{name: {dtype, shape,
data_offsets}}``, then the raw little-endian bytes) is the public format specification
(huggingface/safetensors, README "Format").

Example:
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> d = tempfile.mkdtemp()
    >>> save_file({"weight": torch.ones(3, 2), "bias": torch.zeros(3)}, f"{d}/model.safetensors")
    >>> with empty_init():
    ...     layer = torch.nn.Linear(2, 3)
    >>> layer.weight.is_meta
    True
    >>> load_weights(layer, checkpoint_files(d), dtype=torch.bfloat16)
    >>> layer.weight.dtype, float(layer.weight.sum()), layer.weight.requires_grad
    (torch.bfloat16, 6.0, True)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHUNK_BYTES = 64 * 2**20  # scratch per conversion read

# safetensors dtype names -> torch dtypes (format specification)
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip


# ----------------------------------------------------------------------------------------- construction
@contextmanager
def empty_init() -> Iterator[None]:
    """Build modules with their parameters on the meta device (buffers stay real).

    Every ``register_parameter`` inside the block moves the new parameter to meta, so layer constructors'
    random init runs on meta tensors (a no-op) and no parameter memory is touched. Fill the parameters with
    :func:`load_weights` (or ``module.to_empty``) before use.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = type(param)(param.data.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def meta_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters of ``module`` still on the meta device (never loaded)."""
    return [name for name, p in module.named_parameters(remove_duplicate=False) if p.is_meta]


# ----------------------------------------------------------------------------------------- checkpoint files
def checkpoint_files(source: str | Path) -> list[Path]:
    """The ``*.safetensors`` files of a local directory (through ``model.safetensors.index.json`` when sharded),
    or of a hub id already in the local cache. A single ``.safetensors`` file is returned as is.

    Raises:
        FileNotFoundError: no such directory / cached snapshot, or no safetensors file in it.
    """
    path = Path(str(source))
    if path.is_file() and path.suffix == ".safetensors":
        return [path]
    if not path.is_dir():
        path = _cached_snapshot(str(source))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no model.safetensors(.index.json): safetensors weights are needed")
    return files


def _cached_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError (not a repo id)
        raise FileNotFoundError(f"'{repo_id}' is neither a local directory nor a hub id in the local cache "
                                f"({type(err).__name__}); download it to a directory first") from err  # fmt: skip


class SafetensorsReader:
    """Reads tensors of one or more safetensors files with plain ``readinto`` calls (no mmap).

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> d = tempfile.mkdtemp(); save_file({"a": torch.arange(6.0).view(2, 3)}, f"{d}/x.safetensors")
        >>> reader = SafetensorsReader([Path(d) / "x.safetensors"])
        >>> out = torch.empty(2, 3, dtype=torch.bfloat16); reader.read_into("a", out); out[1].tolist()
        [3.0, 4.0, 5.0]
    """

    def __init__(self, files: list[Path]) -> None:
        self.entries: dict[str, tuple[Path, torch.dtype, tuple[int, ...], int, int]] = {}
        for file in files:
            with open(file, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
            base = 8 + length
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if info["dtype"] not in _DTYPES:
                    raise ValueError(f"{file}: tensor '{name}' has dtype {info['dtype']}, which vidtempo cannot read")
                begin, end = info["data_offsets"]
                self.entries[name] = (file, _DTYPES[info["dtype"]], tuple(info["shape"]), base + begin, base + end)
        self._handles: dict[Path, Any] = {}

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][2]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def _read(self, file: Path, offset: int, out: memoryview) -> None:
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = open(file, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        handle.seek(offset)
        done = 0
        while done < len(out):
            n = handle.readinto(out[done:])
            if not n:
                raise ValueError(f"{file}: truncated at byte {offset + done} (the file is shorter than its header says)")
            done += n

    def read_into(self, name: str, dest: torch.Tensor) -> None:
        """Fill ``dest`` (same shape, any dtype / device) with tensor ``name``."""
        file, dtype, shape, begin, end = self.entries[name]
        if tuple(dest.shape) != shape:
            raise ValueError(f"{file}: '{name}' has shape {list(shape)}, the model expects {list(dest.shape)}")
        if dest.numel() == 0:
            return
        if dest.dtype == dtype and dest.device.type == "cpu" and dest.is_contiguous():
            self._read(file, begin, memoryview(dest.view(-1).view(torch.uint8).numpy()))  # straight in
            return
        flat = dest.view(-1) if dest.is_contiguous() else None
        item = torch.empty(0, dtype=dtype).element_size()
        per_chunk = max(1, CHUNK_BYTES // item)
        pin = dest.device.type == "cuda"
        scratch = torch.empty(min(per_chunk, dest.numel()) * item, dtype=torch.uint8, pin_memory=pin)
        total, start = dest.numel(), 0
        if flat is None:  # a non-contiguous destination: read whole, then copy (rare: parameters are contiguous)
            whole = torch.empty(total * item, dtype=torch.uint8)
            self._read(file, begin, memoryview(whole.numpy()))
            dest.copy_(whole.view(dtype).view(shape))
            return
        while start < total:
            n = min(per_chunk, total - start)
            part = scratch[: n * item]
            self._read(file, begin + start * item, memoryview(part.numpy()))
            flat[start : start + n].copy_(part.view(dtype), non_blocking=False)
            start += n
        assert begin + total * item == end


# ----------------------------------------------------------------------------------------- loading
def load_weights(
    module: nn.Module,
    files: list[Path],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    rename: Callable[[str], str | None] | None = None,
    ignore_unexpected: Callable[[str], bool] | None = None,
    optional: Callable[[str], bool] | None = None,
) -> None:
    """Fill every parameter and persistent buffer of ``module`` from safetensors ``files``.

    Args:
        module: built under :func:`empty_init` (meta parameters: each is allocated once, in ``dtype`` on
            ``device``) or a materialised module (its tensors are overwritten in place, converted to ``dtype``).
        dtype: floating dtype of the loaded parameters; None = the dtype each parameter has now.
        device: where new tensors are allocated; None = CPU for meta parameters, else where they are.
        rename: checkpoint key -> module key (None = not a tensor of this module: skipped).
        ignore_unexpected: checkpoint keys (after ``rename``) that may be absent from the module.
        optional: module keys that may be absent from the checkpoint (they must not be meta then).

    Raises:
        ValueError: a module tensor missing from the checkpoint, a checkpoint tensor the module lacks, or a
            shape mismatch; the message names the first few keys.
    """
    reader = SafetensorsReader(files)
    try:
        by_module_key: dict[str, str] = {}
        for key in reader.keys():
            target = rename(key) if rename is not None else key
            if target is not None:
                by_module_key[target] = key
        state = module.state_dict(keep_vars=True)
        unexpected = [k for k in by_module_key if k not in state and not (ignore_unexpected and ignore_unexpected(k))]
        done: dict[int, torch.Tensor] = {}  # id(original tensor) -> loaded tensor (ties)
        missing = []
        for name, tensor in sorted(state.items(), key=lambda kv: kv[0] not in by_module_key):  # ties: read first
            if id(tensor) in done:
                assign_tensor(module, name, done[id(tensor)])
                continue
            key = by_module_key.get(name)
            if key is None:
                if not (optional and optional(name)) or tensor.is_meta:
                    missing.append(name)
                continue
            done[id(tensor)] = _load_one(module, name, tensor, reader, key, dtype, device)
        if missing or unexpected:
            raise ValueError(f"{files[0].parent}: checkpoint and model differ: missing {missing[:5]} "
                             f"({len(missing)} in all), unexpected {unexpected[:5]} ({len(unexpected)} in all)")  # fmt: skip
    finally:
        reader.close()


def _load_one(module: nn.Module, name: str, tensor: torch.Tensor, reader: SafetensorsReader, key: str,
              dtype: torch.dtype | None, device: torch.device | str | None) -> torch.Tensor:  # fmt: skip
    want = dtype if (dtype is not None and tensor.is_floating_point()) else tensor.dtype
    if tensor.is_meta or tensor.dtype != want or (device is not None and tensor.device != torch.device(device)):
        where = device if device is not None else (tensor.device if not tensor.is_meta else "cpu")
        new = torch.empty(tensor.shape, dtype=want, device=where)
        with torch.no_grad():
            reader.read_into(key, new)
        return assign_tensor(module, name, new, like=tensor)
    with torch.no_grad():
        reader.read_into(key, tensor.data)  # materialised, right dtype and device: in place
    return tensor


def assign_tensor(module: nn.Module, name: str, value: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """Put ``value`` at dotted ``name`` (a parameter keeps its class and ``requires_grad``); returns what was set."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if leaf in owner._parameters:
        if isinstance(value, nn.Parameter):
            new = value
        else:
            old = owner._parameters[leaf] if like is None else like
            new = nn.Parameter(value, requires_grad=bool(old.requires_grad if old is not None else True))
        owner._parameters[leaf] = new
        return new
    owner._buffers[leaf] = value
    return value


def weights_dtype(precision: Any) -> torch.dtype:
    """The dtype pretrained weights are loaded in for a Lightning precision: bf16 / fp16 for ``bf16-true`` /
    ``16-true`` (the weights train in it), fp32 otherwise (mixed precision keeps fp32 parameters).

    Example:
        >>> weights_dtype("bf16-true"), weights_dtype("bf16-mixed")
        (torch.bfloat16, torch.float32)
    """
    return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(str(precision), torch.float32)
