"""vidtempo: train and evaluate video LLMs that reason about time.

Importing this package is cheap: it imports no model code, no ``transformers`` and no ``lightning``.
Sub-packages are imported on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
