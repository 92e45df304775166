"""TEMPO / TEMPLE self-generated preference data (``vidtempo prefgen``; ``docs/methods/prefgen.md``).

Modules (imported on use; importing this package stays cheap):

* :mod:`vidtempo.prefgen.select`: temporally rich video selection (shots, clip filters, grouping, repetition).
* :mod:`vidtempo.prefgen.captions`: clip captions and video descriptions by the model being trained.
* :mod:`vidtempo.prefgen.pairs`: perturbations, pair filters, perturbed videos, the resumable writer.
"""

from __future__ import annotations

__all__ = ["captions", "pairs", "select"]
