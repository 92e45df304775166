"""``bf16-true`` / ``16-true`` without casting the batch fields that must stay fp32.

Lightning's ``HalfPrecision`` casts every floating tensor of a batch to the half dtype before the step. Frames
leave the collators as uint8 (untouched), but timestamps (bf16 spacing is 1-4 s at the magnitudes of hour-long
videos), summed reference log-probs and audio would lose precision. A batch class declares those fields in
``fp32_fields`` (``VideoTextBatch``: timestamps, audio, targets; ``PreferenceBatch``: the reference log-probs);
:class:`KeepFp32HalfPrecision` casts the other floating tensors as Lightning does and leaves the declared ones as
they are. ``build_trainer`` uses it for every ``*-true`` half precision.

Example:
    >>> import torch
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Batch:
    ...     fp32_fields = ("times",)
    ...     feats: torch.Tensor
    ...     times: torch.Tensor
    >>> out = cast_floats(Batch(torch.zeros(2), torch.zeros(2)), torch.bfloat16)
    >>> out.feats.dtype, out.times.dtype
    (torch.bfloat16, torch.float32)
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from lightning.pytorch.plugins.precision import HalfPrecision


def cast_floats(data: Any, dtype: torch.dtype) -> Any:
    """``data`` with every floating tensor cast to ``dtype``, except the fields a dataclass names in its
    ``fp32_fields`` (recursing into dataclasses, dicts, lists and tuples; other values are shared)."""
    if isinstance(data, torch.Tensor):
        return data.to(dtype) if data.is_floating_point() else data
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        keep = set(getattr(data, "fp32_fields", ()))
        out = copy.copy(data)
        for f in dataclasses.fields(data):
            if f.name not in keep:
                setattr(out, f.name, cast_floats(getattr(data, f.name), dtype))
        return out
    if isinstance(data, dict):
        return type(data)((k, cast_floats(v, dtype)) for k, v in data.items())
    if isinstance(data, list):
        return [cast_floats(v, dtype) for v in data]
    if isinstance(data, tuple) and not hasattr(data, "_fields"):
        return tuple(cast_floats(v, dtype) for v in data)
    return data


class KeepFp32HalfPrecision(HalfPrecision):
    """Lightning's ``HalfPrecision`` (``bf16-true`` / ``16-true``) that leaves a batch's ``fp32_fields`` in fp32.

    Example:
        >>> KeepFp32HalfPrecision("bf16-true").precision
        'bf16-true'
    """

    def convert_input(self, data: Any) -> Any:
        return cast_floats(data, self._desired_input_dtype)
