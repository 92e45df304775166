"""PixelPatchEncoder: patch layout and values are the frame's own pixels."""

from __future__ import annotations

import pytest
import torch

from vidtempo.models.encoders.pixels import PixelPatchEncoder


def test_patches_hold_the_frame_pixels_in_raster_order():
    frame = torch.zeros(1, 3, 8, 8)
    frame[0, 0, :4, 4:] = 1.0  # top-right cell is red
    feats, grid = PixelPatchEncoder(image_size=8, patch=4).encode(frame)
    assert grid == (2, 2) and feats.shape == (1, 4, 48)
    red = feats[0, :, :16].mean(dim=1)  # red channel of each cell, normalised to [-1, 1]
    assert red.tolist() == [-1.0, 1.0, -1.0, -1.0]


def test_bad_patch_size_is_refused():
    with pytest.raises(ValueError, match="multiple of patch"):
        PixelPatchEncoder(image_size=10, patch=4)
