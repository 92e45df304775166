"""Evaluation: metrics, answer parsing and benchmark scorers (pure Python / NumPy).

Import the submodules directly (``vidtempo.eval.metrics``, ``vidtempo.eval.parsing``,
``vidtempo.eval.scorers``); this package ``__init__`` imports nothing so that ``import vidtempo.eval``
stays cheap.
"""

__all__ = ["metrics", "parsing", "scorers"]
