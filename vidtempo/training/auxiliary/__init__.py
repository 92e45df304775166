"""Auxiliary losses as recipe plug-ins (``objective.aux``): the base class and the built-in per-frame heads.

Example:
    >>> from vidtempo.training.auxiliary import AuxLoss, SaliencyLoss
    >>> issubclass(SaliencyLoss, AuxLoss)
    True
"""

from vidtempo.training.auxiliary.base import AuxLoss, AuxLossError, bind_aux
from vidtempo.training.auxiliary.encoder_tags import EncoderTagHead, EncoderTagLoss
from vidtempo.training.auxiliary.frame_heads import (
           FrameSaliencyLoss,
           FrameTagLoss,
           SaliencyLoss,
           TokenFrameReadout,
           hidden_state,
)

__all__ = ["AuxLoss", "AuxLossError", "EncoderTagHead", "EncoderTagLoss", "FrameSaliencyLoss", "FrameTagLoss", "SaliencyLoss",
           "TokenFrameReadout",
           "bind_aux", "hidden_state"]  # fmt: skip
