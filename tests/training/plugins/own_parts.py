"""A researcher's own model part, named in a checkpoint by dotted path (tests/core/test_faults.py: loading it
needs ``trust_code``)."""

from __future__ import annotations

from vidtempo.models.compressors.pooling import SpatialPoolCompressor


class ScaledPool(SpatialPoolCompressor):
    """Spatial pooling whose tokens are doubled."""

    def forward(self, inputs):  # type: ignore[no-untyped-def]
        out = super().forward(inputs)
        out.tokens = out.tokens * 2.0
        return out
