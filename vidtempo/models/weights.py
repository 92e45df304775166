"""Lean model building: parameters on the meta device, weights read tensor by tensor straight into their target
dtype and device.

Building a pretrained part the plain way (random init in fp32, then ``from_pretrained`` builds a second fp32
copy and ``load_state_dict`` copies it over) costs about 4x the bf16 weight bytes of host memory and minutes of
CPU init for a 7 B LLM. Here:

* :func:`empty_init` builds a module with every parameter on the meta device (no memory, no random init);
  buffers stay real, so non-persistent ones computed in constructors (rotary ``inv_freq``) are right;
* :func:`load_weights` fills each parameter from the checkpoint's ``*.safetensors`` files: every tensor is read
  with plain file reads (no mmap, so no file pages count against the process) directly into its final tensor,
  converted chunk by chunk (<= 4 MiB of scratch) when the file's dtype or device differ. Peak host memory is
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
    >>> load_weights(layer, checkpoint_files(d), dtype=torch.bfloat16)  # bytes read
    36
    >>> layer.weight.dtype, float(layer.weight.sum()), layer.weight.requires_grad
    (torch.bfloat16, 6.0, True)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHUNK_BYTES = 4 * 2**20  # scratch for conversion reads (one buffer per load)

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
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"


def checkpoint_files(source: str | Path) -> list[Path]:
    """The weight files of a local directory or of a hub id already in the local cache: its ``*.safetensors``
    files (through ``model.safetensors.index.json`` when sharded), else its ``pytorch_model*.bin`` files
    (through ``pytorch_model.bin.index.json``). A single ``.safetensors`` / ``.bin`` file is returned as is.

    Raises:
        FileNotFoundError: no such directory / cached snapshot, or no weight file in it.
    """
    path = Path(str(source))
    if path.is_file() and path.suffix in (".safetensors", ".bin"):
        return [path]
    if not path.is_dir():
        path = cached_snapshot(str(source))
    for index in (path / "model.safetensors.index.json", path / TORCH_BIN_INDEX):
        if index.is_file():
            return [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{path}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")
    return files


def cached_snapshot(repo_id: str) -> Path:
    """The local snapshot directory of hub id ``repo_id`` when it is in the Hugging Face cache (never downloads).

    Raises:
        FileNotFoundError: not a hub id, or not in the local cache.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True,
                                      allow_patterns=["*.json", "*.safetensors", "*.bin"]))  # fmt: skip
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError (not a repo id)
        raise FileNotFoundError(f"'{repo_id}' is neither a local directory nor a hub id in the local cache "
                                f"({type(err).__name__}); download it to a directory first") from err  # fmt: skip


def _check_slice(where: Any, name: str, shape: tuple[int, ...], dest: torch.Tensor, start: int) -> None:
    """``dest`` must be rows ``start:start + len(dest)`` of a tensor of ``shape`` (all of it when start = 0)."""
    if start == 0 and tuple(dest.shape) == shape:
        return
    if not shape or tuple(dest.shape[1:]) != shape[1:] or start < 0 or start + dest.shape[0] > shape[0]:
        raise ValueError(f"{where}: '{name}' has shape {list(shape)}, the model expects {list(dest.shape)}"
                         + (f" at row {start}" if start else ""))  # fmt: skip


class SafetensorsReader:
    """Reads tensors (or row ranges of them) of safetensors files with plain ``readinto`` calls (no mmap).

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> d = tempfile.mkdtemp(); save_file({"a": torch.arange(6.0).view(2, 3)}, f"{d}/x.safetensors")
        >>> reader = SafetensorsReader([Path(d) / "x.safetensors"])
        >>> out = torch.empty(2, 3, dtype=torch.bfloat16); reader.read_into("a", out); out[1].tolist()
        [3.0, 4.0, 5.0]
        >>> row = torch.empty(1, 3); reader.read_into("a", row, start=1); reader.bytes_read
        36
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
        self._scratch: torch.Tensor | None = None
        self.bytes_read = 0  # checkpoint bytes read so far (a sharded load reads only its rows)

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][2]

    def order(self, name: str) -> tuple[str, int]:
        """Sort key: file, then position in it (tensors are read in file order)."""
        return str(self.entries[name][0]), self.entries[name][3]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._scratch = None

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
        self.bytes_read += len(out)

    def _scratch_for(self, nbytes: int, pin: bool) -> torch.Tensor:
        """One conversion buffer for the whole load, grown to the largest chunk: a fresh buffer per tensor would
        leave the allocator's freed blocks counted in the process's memory (glibc raises its mmap threshold
        after each large free, so later buffers come from a heap that does not shrink)."""
        if self._scratch is None or self._scratch.numel() < nbytes or (pin and not self._scratch.is_pinned()):
            self._scratch = None
            self._scratch = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
        return self._scratch

    def read_into(self, name: str, dest: torch.Tensor, start: int = 0) -> None:
        """Fill ``dest`` (any dtype / device) with tensor ``name``, or with its rows ``start:start + len(dest)``
        (a dim-0 shard: its bytes are contiguous in the file, so only they are read)."""
        file, dtype, shape, begin, end = self.entries[name]
        _check_slice(file, name, shape, dest, start)
        if dest.numel() == 0:
            return
        item = torch.empty(0, dtype=dtype).element_size()
        row = int(torch.Size(shape[1:]).numel()) if shape else 1
        begin, total = begin + start * row * item, dest.numel()
        assert begin + total * item <= end
        if dest.dtype == dtype and dest.device.type == "cpu" and dest.is_contiguous():
            self._read(file, begin, memoryview(dest.view(-1).view(torch.uint8).numpy()))  # straight in
            return
        per_chunk = max(1, CHUNK_BYTES // item)
        if not dest.is_contiguous():  # a non-contiguous destination: read whole, then copy (rare)
            whole = torch.empty(total * item, dtype=torch.uint8)
            self._read(file, begin, memoryview(whole.numpy()))
            dest.copy_(whole.view(dtype).view(dest.shape))
            return
        flat = dest.view(-1)
        scratch = self._scratch_for(min(per_chunk, total) * item, pin=dest.device.type == "cuda")
        done = 0
        while done < total:
            n = min(per_chunk, total - done)
            part = scratch[: n * item]
            self._read(file, begin + done * item, memoryview(part.numpy()))
            flat[done : done + n].copy_(part.view(dtype), non_blocking=False)
            done += n


class TorchBinReader:
    """Reads tensors of ``torch.save`` checkpoints (``pytorch_model.bin`` and its shards) one file at a time:
    ``torch.load(mmap=True, weights_only=True)`` maps a file without reading it, each tensor is copied (cast)
    into its destination, and the file is unmapped before the next one is opened.

    Example:
        >>> import tempfile, torch
        >>> d = Path(tempfile.mkdtemp()); torch.save({"a": torch.arange(6.0).view(2, 3)}, d / "pytorch_model.bin")
        >>> out = torch.empty(1, 3, dtype=torch.bfloat16)
        >>> TorchBinReader([d / "pytorch_model.bin"]).read_into("a", out, start=1); out.tolist()
        [[3.0, 4.0, 5.0]]
    """

    def __init__(self, files: list[Path]) -> None:
        self.entries: dict[str, tuple[int, tuple[int, ...], int]] = {}  # name -> (file index, shape, position)
        self.files = list(files)
        self._current: tuple[int, dict[str, torch.Tensor]] | None = None  # the one file mapped now
        for i in range(len(self.files)):
            for pos, (name, tensor) in enumerate(self._load(i).items()):
                self.entries[name] = (i, tuple(tensor.shape), pos)
            self._current = None  # unmapped: only shapes are kept
        self.bytes_read = 0

    def _load(self, index: int) -> dict[str, torch.Tensor]:
        file = self.files[index]
        try:
            state = torch.load(str(file), map_location="cpu", mmap=True, weights_only=True)
        except Exception as err:  # a pickle weights_only refuses, a truncated zip, ...
            raise ValueError(f"{file}: not a readable torch.save state dict ({type(err).__name__}: {err})") from err
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{file}: expected a flat state dict of tensors, got {type(state).__name__}")
        self._current = (index, state)
        return state

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def order(self, name: str) -> tuple[str, int]:
        return str(self.files[self.entries[name][0]]), self.entries[name][2]

    def close(self) -> None:
        self._current = None

    def read_into(self, name: str, dest: torch.Tensor, start: int = 0) -> None:
        index, shape, _ = self.entries[name]
        _check_slice(self.files[index], name, shape, dest, start)
        state = self._current[1] if self._current is not None and self._current[0] == index else self._load(index)
        source = state[name]
        if tuple(dest.shape) != shape:
            source = source.narrow(0, start, dest.shape[0])
        dest.copy_(source)
        self.bytes_read += source.numel() * source.element_size()


class StateDictReader:
    """The reader interface over an in-memory state dict (e.g. timm's converted EVA-CLIP keys): each tensor is
    cast into its destination, and dropped from the dict once read."""

    def __init__(self, state: dict[str, torch.Tensor], where: str = "state dict") -> None:
        self.state, self.where, self.bytes_read = dict(state), where, 0
        self.shapes = {k: tuple(v.shape) for k, v in self.state.items()}

    def keys(self) -> list[str]:
        return list(self.shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name]

    def order(self, name: str) -> tuple[str, int]:
        return "", 0

    def close(self) -> None:
        self.state.clear()

    def read_into(self, name: str, dest: torch.Tensor, start: int = 0) -> None:
        _check_slice(self.where, name, self.shapes[name], dest, start)
        source = self.state[name]
        dest.copy_(source if tuple(dest.shape) == self.shapes[name] else source.narrow(0, start, dest.shape[0]))
        self.bytes_read += dest.numel() * source.element_size()


Reader = SafetensorsReader | TorchBinReader | StateDictReader


def open_reader(files: list[Path]) -> Reader:
    """The reader for ``files``: safetensors, or ``torch.save`` files (``.bin`` / ``.pt`` / ``.pth``)."""
    if not files:
        raise FileNotFoundError("no weight files given")
    kinds = {f.suffix == ".safetensors" for f in files}
    if len(kinds) > 1:
        raise ValueError(f"{files[0].parent}: a mix of safetensors and torch.save weight files; pass one kind")
    return SafetensorsReader(files) if kinds.pop() else TorchBinReader(files)


# ----------------------------------------------------------------------------------------- loading
@dataclass
class PendingLoad:
    """A ``load_weights`` call recorded under :func:`defer_loads`: ``module`` (its parameters on meta, already in
    ``dtype``) is filled later by :func:`load_pending`, after FSDP2 has sharded it (each rank reads its rows)."""

    module: nn.Module
    files: list[Path]
    dtype: torch.dtype | None
    rename: Rename | None = None
    ignore_unexpected: Callable[[str], bool] | None = None
    optional: Callable[[str], bool] | None = None


_recording: ContextVar[list[PendingLoad] | None] = ContextVar("vidtempo_deferred_loads", default=None)


@contextmanager
def defer_loads() -> Iterator[list[PendingLoad]]:
    """Within the block, :func:`load_weights` on a meta-built module checks the checkpoint's keys and shapes,
    casts the meta parameters to the target dtype (no memory) and records the load instead of reading it; the
    yielded list holds the records for :func:`load_pending`.

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> d = tempfile.mkdtemp(); save_file({"weight": torch.ones(3, 2), "bias": torch.zeros(3)}, f"{d}/m.safetensors")
        >>> with empty_init():
        ...     layer = torch.nn.Linear(2, 3)
        >>> with defer_loads() as pending:
        ...     load_weights(layer, checkpoint_files(d), dtype=torch.bfloat16)  # recorded, nothing read
        0
        >>> layer.weight.is_meta, layer.weight.dtype, len(pending)
        (True, torch.bfloat16, 1)
        >>> load_pending(pending); float(layer.weight.detach().sum())
        36
        6.0
    """
    token = _recording.set([])
    try:
        yield _recording.get()  # type: ignore[misc]
    finally:
        _recording.reset(token)


def _unwrapped(name: str) -> str:
    """A module key without the ``.base_layer`` segments peft's LoRA layers insert (the checkpoint's key)."""
    return name.replace(".base_layer.", ".")


Row = tuple[str, torch.Tensor, str | None, int]  # module key, tensor, checkpoint key, first row in it
Rename = Callable[[str], str | list[str] | None]


def _plan(module: nn.Module, reader: Reader, where: Any, rename: Rename | None,
          ignore_unexpected: Callable[[str], bool] | None, optional: Callable[[str], bool] | None,
          ) -> tuple[list[Row], dict[str, torch.Tensor]]:  # fmt: skip
    """What to read: ``[(module key, tensor, checkpoint key or None for a tie / an optional tensor, first row)]``
    (each distinct tensor with a checkpoint key first, in file order) and the module's state. ``rename`` may
    map a checkpoint key to a list of module keys: the tensor is split into that many equal parts on dim 0
    (transformers' ``Chunk(dim=0)`` conversion, e.g. DINOv2's fused SwiGLU input projection).

    Raises:
        ValueError: a module tensor missing from the checkpoint, a checkpoint tensor the module lacks, or a shape
            mismatch; the message names the first few keys.
    """
    by_module_key: dict[str, str] = {}
    parts: dict[str, tuple[int, int]] = {}  # module key -> (part, parts): a checkpoint tensor split on dim 0
    for key in reader.keys():
        target = rename(key) if rename is not None else key
        if isinstance(target, list | tuple):
            for i, name in enumerate(target):
                by_module_key[name], parts[name] = key, (i, len(target))
        elif target is not None:
            by_module_key[target] = key
    state = {name: t for name, t in _named_tensors(module)}
    plain = {_unwrapped(k) for k in state}
    unexpected = [k for k in by_module_key if k not in plain and not (ignore_unexpected and ignore_unexpected(k))]
    missing, shapes, rows, seen = [], [], [], set()
    for name, tensor in state.items():
        key = by_module_key.get(_unwrapped(name))
        if key is None:
            tied = id(tensor) in seen or any(t is tensor and _unwrapped(n) in by_module_key for n, t in state.items())
            if not tied and (tensor.is_meta or not (optional and optional(_unwrapped(name)))):
                missing.append(name)
            rows.append((name, tensor, None, 0))
            continue
        part, count = parts.get(_unwrapped(name), (0, 1))
        want = (tensor.shape[0] * count, *tensor.shape[1:]) if tensor.dim() else ()
        if tuple(reader.shape(key)) != tuple(want):
            shapes.append(f"'{key}' has shape {list(reader.shape(key))}, the model expects {list(want)}")
        seen.add(id(tensor))
        rows.append((name, tensor, key, part * (tensor.shape[0] if tensor.dim() else 0)))
    if shapes:
        raise ValueError(f"{where}: {shapes[0]} ({len(shapes)} shape mismatches in all)")
    if missing or unexpected:
        raise ValueError(f"{where}: checkpoint and model differ: missing {missing[:5]} "
                         f"({len(missing)} in all), unexpected {unexpected[:5]} ({len(unexpected)} in all)")  # fmt: skip
    rows.sort(key=lambda r: (r[2] is None, reader.order(r[2]) if r[2] is not None else ("", 0), r[3]))
    return rows, state


def _named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters (ties under every name) and persistent buffers of ``module``."""
    out = list(module.named_parameters(remove_duplicate=False))
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for name, buf in sub._buffers.items():
            if buf is not None and name not in sub._non_persistent_buffers_set:
                out.append((f"{prefix}.{name}" if prefix else name, buf))
    return out


def load_weights(
    module: nn.Module,
    files: list[Path] | Reader,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    rename: Rename | None = None,
    ignore_unexpected: Callable[[str], bool] | None = None,
    optional: Callable[[str], bool] | None = None,
) -> int:
    """Fill every parameter and persistent buffer of ``module`` from checkpoint ``files`` (safetensors or
    ``torch.save`` files) or an open reader (e.g. a :class:`StateDictReader`).

    Args:
        module: built under :func:`empty_init` (meta parameters: each is allocated once, in ``dtype`` on
            ``device``) or a materialised module (its tensors are overwritten in place, converted to ``dtype``).
            Under :func:`defer_loads` a meta-built module is only checked and recorded (files only).
        dtype: floating dtype of the loaded parameters; None = the dtype each parameter has now.
        device: where new tensors are allocated; None = CPU for meta parameters, else where they are.
        rename: checkpoint key -> module key (None = not a tensor of this module: skipped; a list = the tensor
            split into that many equal dim-0 parts, one per module key).
        ignore_unexpected: checkpoint keys (after ``rename``) that may be absent from the module.
        optional: module keys that may be absent from the checkpoint (they must not be meta then).

    Returns:
        the checkpoint bytes read (0 when only recorded; a rank's share of each tensor under FSDP2).

    Raises:
        ValueError: a module tensor missing from the checkpoint, a checkpoint tensor the module lacks, or a
            shape mismatch; the message names the first few keys.
    """
    reader = open_reader(files) if isinstance(files, list) else files
    where = files[0].parent if isinstance(files, list) else getattr(files, "where", type(files).__name__)
    try:
        rows, _ = _plan(module, reader, where, rename, ignore_unexpected, optional)
        recording = _recording.get()
        if recording is not None and isinstance(files, list) and any(t.is_meta for _, t, _k, _s in rows):
            _cast_meta(module, rows, dtype)
            recording.append(PendingLoad(module, list(files), dtype, rename, ignore_unexpected, optional))
            return 0
        _execute(module, rows, reader, dtype, device)
        return reader.bytes_read
    finally:
        reader.close()


def _cast_meta(module: nn.Module, rows: list[Row], dtype: torch.dtype | None) -> None:
    """Meta parameters to ``dtype`` (still on meta, ties kept): what peft and FSDP2 see before the load."""
    if dtype is None:
        return
    done: dict[int, torch.Tensor] = {}
    for name, tensor, _, _ in rows:
        if tensor.is_meta and tensor.is_floating_point() and tensor.dtype != dtype:
            new = done.get(id(tensor))
            if new is None:
                new = done[id(tensor)] = assign_tensor(module, name, torch.empty_like(tensor, dtype=dtype), like=tensor)
            else:
                assign_tensor(module, name, new)


def _execute(module: nn.Module, rows: list[Row], reader: Reader,
             dtype: torch.dtype | None, device: torch.device | str | None) -> None:  # fmt: skip
    done: dict[int, torch.Tensor] = {}  # id(original tensor) -> loaded tensor (ties)
    for name, tensor, key, start in rows:
        if id(tensor) in done:
            assign_tensor(module, name, done[id(tensor)])
        elif key is not None:
            done[id(tensor)] = _load_one(module, name, tensor, reader, key, dtype, device, start)


def _load_one(module: nn.Module, name: str, tensor: torch.Tensor, reader: Reader, key: str,
              dtype: torch.dtype | None, device: torch.device | str | None, start: int = 0) -> torch.Tensor:  # fmt: skip
    want = dtype if (dtype is not None and tensor.is_floating_point()) else tensor.dtype
    if _is_dtensor(tensor):
        return _load_shard(module, name, tensor, reader, key, want, start)
    if tensor.is_meta or tensor.dtype != want or (device is not None and tensor.device != torch.device(device)):
        where = device if device is not None else (tensor.device if not tensor.is_meta else "cpu")
        new = torch.empty(tensor.shape, dtype=want, device=where)
        with torch.no_grad():
            reader.read_into(key, new, start=start)
        return assign_tensor(module, name, new, like=tensor)
    with torch.no_grad():
        reader.read_into(key, tensor.data, start=start)  # materialised, right dtype and device: in place
    return tensor


def _is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _load_shard(module: nn.Module, name: str, tensor: torch.Tensor, reader: Reader, key: str,
                dtype: torch.dtype, start: int = 0) -> torch.Tensor:  # fmt: skip
    """A DTensor parameter (FSDP2: ``Shard(0)`` over the data-parallel mesh): only this rank's rows of ``key``
    are read, into a new local tensor on the mesh's device, wrapped as a DTensor of the same global layout."""
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    placements = tuple(tensor.placements)
    if not all(isinstance(p, Replicate) or (isinstance(p, Shard) and p.dim == 0) for p in placements):
        raise ValueError(f"{name}: sharded as {placements}; only dim-0 shards (FSDP2) load slice-wise")
    mesh = tensor.device_mesh
    local_shape, offset = compute_local_shape_and_global_offset(tensor.shape, mesh, placements)
    device = torch.device(mesh.device_type, torch.cuda.current_device()) if mesh.device_type == "cuda" else \
        torch.device(mesh.device_type)  # fmt: skip
    local = torch.empty(tuple(local_shape), dtype=dtype, device=device)
    with torch.no_grad():
        reader.read_into(key, local, start=start + (int(offset[0]) if len(offset) else 0))
    value = DTensor.from_local(local, mesh, placements, run_check=False, shape=tensor.shape, stride=tensor.stride())
    return assign_tensor(module, name, value, like=tensor)


def load_pending(pending: list[PendingLoad]) -> int:
    """Load what :func:`defer_loads` recorded. A parameter FSDP2 has sharded (a meta DTensor) gets this rank's
    rows only, read straight into its local shard on the mesh's device; an unsharded one is loaded whole (the
    fallback before anything needs the values unsharded). peft's LoRA layers may wrap the module meanwhile
    (``.base_layer`` keys map to the checkpoint's); their adapters are left as they are. Empties ``pending``;
    returns the checkpoint bytes read."""
    total = 0
    while pending:
        item = pending.pop(0)
        total += load_weights(item.module, item.files, dtype=item.dtype, rename=item.rename,
                              ignore_unexpected=item.ignore_unexpected, optional=_with_adapters(item.optional))  # fmt: skip
    return total


def transformers_key_map(model: nn.Module, checkpoint_keys: list[str]) -> dict[str, str | list[str]]:
    """Checkpoint key -> module key(s) under the key conversions transformers applies when it loads ``model``
    (``transformers.conversion_mapping``: transformers 5 renames e.g. DINOv2's ``attention.attention.query`` to
    ``attention.q_proj`` and splits its fused SwiGLU ``mlp.weights_in`` in two on dim 0, which is a list here).
    Keys no conversion touches map to themselves.

    Raises:
        ValueError: a conversion other than a rename or a dim-0 split (it would need the whole tensor).
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # a transformers without conversions: keys are the module's
        return {k: k for k in checkpoint_keys}
    transforms = get_model_conversion_mapping(model) if hasattr(model, "config") else []
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter) and not isinstance(t, WeightRenaming)]
    out: dict[str, str | list[str]] = {}
    for key in checkpoint_keys:
        renamed, pattern = rename_source_key(key, renamings, converters)
        if pattern is None:
            out[key] = renamed
            continue
        conv = next(c for c in converters if pattern in c.source_patterns)
        ops = [type(op).__name__ for op in conv.operations]
        if ops != ["Chunk"] or getattr(conv.operations[0], "dim", None) != 0 or len(conv.source_patterns) != 1:
            raise ValueError(f"'{key}': transformers converts it with {ops}; only renames and dim-0 chunks load lean")
        first = conv.target_patterns[0]
        base = renamed[: len(renamed) - len(first)] if renamed.endswith(first) else renamed.rsplit(first, 1)[0]
        out[key] = [base + target for target in conv.target_patterns]
    return out


def _with_adapters(optional: Callable[[str], bool] | None) -> Callable[[str], bool]:
    return lambda k: "lora_" in k or "trainable_tokens" in k or bool(optional and optional(k))


@contextmanager
def adapters_off_meta() -> Iterator[None]:
    """peft puts a new LoRA layer's adapters on its base layer's device (``LoraModel._replace_module``, then
    ``_move_adapter_to_device_of_base_layer``); for a base layer still on meta (a deferred load) that would drop
    the adapters' initial values. Within the block such adapters stay on the CPU (in the base layer's dtype), so
    they start as they would on a loaded model, from the same random draws; base layers that are not on meta are
    handled by peft as usual."""
    from peft.tuners.lora.model import LoraModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    move, replace = BaseTunerLayer._move_adapter_to_device_of_base_layer, LoraModel._replace_module

    def on_meta(layer: nn.Module) -> bool:
        weight = getattr(getattr(layer, "base_layer", layer), "weight", None)
        return weight is not None and weight.is_meta

    def move_off_meta(self: Any, adapter_name: str, device: torch.device | None = None) -> None:
        move(self, adapter_name, torch.device("cpu") if device is None and on_meta(self.get_base_layer()) else device)

    def replace_off_meta(self: Any, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        if on_meta(child):  # what peft does, less the move of the new adapters onto the base layer's device
            setattr(parent, child_name, new_module)
        else:
            replace(self, parent, child_name, new_module, child)

    BaseTunerLayer._move_adapter_to_device_of_base_layer = move_off_meta  # type: ignore[method-assign]
    LoraModel._replace_module = replace_off_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        BaseTunerLayer._move_adapter_to_device_of_base_layer = move  # type: ignore[method-assign]
        LoraModel._replace_module = replace  # type: ignore[method-assign]


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
