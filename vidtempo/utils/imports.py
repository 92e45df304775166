"""Optional-dependency helpers: fail at use time with an install hint, never at import time."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def require(module: str, *, package: str | None = None, why: str = "") -> ModuleType:
    """Import ``module`` or raise ``ImportError`` naming the pip package to install.

    Example:
        >>> require("json").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        hint = f"pip install {package or module}"
        reason = f" ({why})" if why else ""
        raise ImportError(f"'{module}' is needed{reason} but cannot be imported: {err}. Try: {hint}") from err
