"""Check a recipe without building anything: every ``_target_`` resolves, every key is a constructor
argument, and plain values have the annotated type. Errors name the recipe file, the key and the choices.

Example:
    >>> validate_node({"_target_": "collections.OrderedDict"}, key="x")
"""

from __future__ import annotations

import collections.abc as cabc
import difflib
import inspect
import pathlib
import types
import typing
from typing import Any

from vidtempo.config.errors import RecipeError
from vidtempo.config.instantiate import SPECIAL_KEYS, resolve_target


def _signature(target: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature
        return None


def _hints(target: Any) -> dict[str, Any]:
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: skip type checks, keep key checks
        return {}


def accepts_value(annotation: Any, value: Any) -> bool:
    """Whether a plain YAML ``value`` fits ``annotation`` (lenient for anything non-trivial)."""
    if annotation in (Any, inspect.Parameter.empty, object):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(accepts_value(a, value) for a in args)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if isinstance(value, dict) and "_target_" in value:
        return True  # a component: its own node is validated separately
    base = origin or annotation
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is str:
        return isinstance(value, str)
    if base in (pathlib.Path, pathlib.PurePath):
        return isinstance(value, str)
    if base in (list, tuple, cabc.Sequence, cabc.Iterable, set, frozenset):
        return isinstance(value, (list, tuple)) and not isinstance(value, str) or (
            base in (cabc.Sequence, cabc.Iterable) and isinstance(value, str)
        )
    if base in (dict, cabc.Mapping, cabc.MutableMapping):
        return isinstance(value, dict)
    if inspect.isclass(base) and value is not None and not isinstance(value, (dict, list)):
        return isinstance(value, base)
    return True


def describe_type(annotation: Any) -> str:
    """A readable name of a type hint; a union of literals lists its values (``one of 64, 32, '16-true'``).

    Example:
        >>> describe_type(int | None), describe_type(typing.Literal["a", "b"])
        ('int or None', "one of 'a', 'b'")
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        others = [describe_type(a) for a in args if typing.get_origin(a) is not typing.Literal]
        parts = ([f"one of {', '.join(repr(v) for v in literals)}"] if literals else []) + others
        return " or ".join(parts)
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_value(annotation: Any, value: Any, *, key: str, recipe: str | None = None) -> None:
    """Raise a ``RecipeError`` naming ``key`` when ``value`` does not fit ``annotation``.

    Example:
        >>> check_value(int, "ten", key="trainer.max_steps")
        Traceback (most recent call last):
        ...
        vidtempo.config.errors.RecipeError: key 'trainer.max_steps': expected int, got str 'ten'
    """
    if not accepts_value(annotation, value):
        raise RecipeError(f"expected {describe_type(annotation)}, got {type(value).__name__} {value!r}",
                          recipe=recipe, key=key)  # fmt: skip


def check_choice(value: Any, choices: typing.Sequence[str], *, key: str, recipe: str | None = None) -> None:
    """Raise a ``RecipeError`` naming ``key``, the valid choices and the closest ones unless ``value`` is one.

    Example:
        >>> check_choice("cosin", ("cosine", "linear"), key="optim.scheduler")
        Traceback (most recent call last):
        ...
        vidtempo.config.errors.RecipeError: key 'optim.scheduler': unknown value 'cosin'. Did you mean cosine? Valid values: cosine, linear
    """
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise RecipeError(f"unknown value {value!r}.{hint} Valid values: {', '.join(map(str, choices))}",
                      recipe=recipe, key=key)  # fmt: skip


def validate_node(
    node: dict[str, Any], *, key: str | None = None, recipe: str | None = None, provided: tuple[str, ...] = ()
) -> None:
    """Validate one ``_target_`` node and, recursively, its children.

    ``provided`` names arguments the caller injects at build time (not required in the recipe).
    """
    target = resolve_target(node, key, recipe)
    sig = _signature(target)
    args = {k: v for k, v in node.items() if k not in SPECIAL_KEYS}
    if sig is not None:
        params = sig.parameters
        has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"]
        unknown = [k for k in args if k not in params]
        if unknown and not has_var_kw:
            raise RecipeError(
                f"'{unknown[0]}' is not an argument of {node['_target_']}; valid arguments: {', '.join(named)}",
                recipe=recipe,
                key=f"{key}.{unknown[0]}" if key else unknown[0],
            )
        hints = _hints(target)
        for name, value in args.items():
            if name in hints:
                check_value(hints[name], value, key=f"{key}.{name}" if key else name, recipe=recipe)
        if not node.get("_partial_", False):
            missing = [
                n
                for n, p in params.items()
                if n in named and p.default is inspect.Parameter.empty and n not in args and n not in provided
            ]
            if missing:
                raise RecipeError(
                    f"missing required argument '{missing[0]}' of {node['_target_']}",
                    recipe=recipe,
                    key=key,
                )
    validate_tree(args, key=key, recipe=recipe)


def validate_tree(tree: Any, *, key: str | None = None, recipe: str | None = None) -> None:
    """Validate every ``_target_`` node found anywhere in ``tree`` (plain containers)."""
    if isinstance(tree, list):
        for i, v in enumerate(tree):
            validate_tree(v, key=f"{key}.{i}" if key else str(i), recipe=recipe)
    elif isinstance(tree, dict):
        if "_target_" in tree:
            validate_node(tree, key=key, recipe=recipe)
            return
        for k, v in tree.items():
            validate_tree(v, key=f"{key}.{k}" if key else str(k), recipe=recipe)
