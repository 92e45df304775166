"""Load a YAML recipe over its ``_base_`` chain, then ``key=value`` / ``+key=value`` / ``~key`` overrides.

Override grammar (same as the CLI):
    ``a.b=3``            set an existing key (unknown key -> error naming it and close matches)
    ``+a.new=3``         add a key that does not exist yet (missing parents are created: ``+eval.batch_size=4``
                         works on a recipe without an ``eval:`` section)
    ``~a.b``             delete a key
    ``model.compressor=pool``  on a node with ``_target_``: shorthand for ``model.compressor._target_=pool``

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.yaml"
    >>> _ = p.write_text("optim: {lr: 0.1}\\n")
    >>> load_recipe(p, ["optim.lr=0.5"]).optim.lr
    0.5
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidtempo.config.errors import RecipeError

RECIPE_PATH_KEY = "_recipe_path_"


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise RecipeError(f"file not found: {path}", recipe=str(path))
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise RecipeError(f"not valid YAML: {err}", recipe=str(path)) from err
    if not isinstance(cfg, DictConfig):
        raise RecipeError("top level must be a mapping", recipe=str(path))
    return cfg


def _with_base(path: Path, chain: tuple[Path, ...] = ()) -> DictConfig:
    """``path`` merged over its ``_base_`` chain (a base may have its own ``_base_``; a loop is an error)."""
    path = path.resolve()
    if path in chain:
        loop = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"_base_ chain loops back to {path}: {loop}", recipe=str(chain[0]), key="_base_")
    cfg = _read_yaml(path)
    base_ref = cfg.pop("_base_", None)
    if base_ref is None:
        return cfg
    base = _with_base(path.parent / str(base_ref), (*chain, path))
    _replace_retargeted(base, cfg)
    return OmegaConf.merge(base, cfg)  # type: ignore[return-value]


def _replace_retargeted(base: DictConfig, child: DictConfig) -> None:
    """A child node with a different ``_target_`` (or null) replaces the base node instead of merging."""
    for key in list(child.keys()):
        if key not in base:
            continue
        b, c = base[key], child[key]
        if c is None or (isinstance(c, DictConfig) and isinstance(b, DictConfig)
                         and "_target_" in c and c.get("_target_") != b.get("_target_")):
            base.pop(key)
        elif isinstance(b, DictConfig) and isinstance(c, DictConfig):
            _replace_retargeted(b, c)


def _parent_and_leaf(cfg: DictConfig, dotted: str, recipe: str) -> tuple[Any, str]:
    parts = dotted.split(".")
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, ListConfig) and part.lstrip("-").isdigit() else part
        try:
            node = node[key]
        except (KeyError, IndexError, OmegaConfBaseException) as err:
            raise _unknown_key(node, ".".join(parts[: i + 1]), part, recipe, full=dotted) from err
    return node, parts[-1]


def _unknown_key(node: Any, dotted: str, leaf: str, recipe: str, full: str | None = None) -> RecipeError:
    choices = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, choices, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    valid = f" Valid keys here: {', '.join(choices)}." if choices else ""
    return RecipeError(f"unknown key.{hint}{valid} (use +{full or dotted}=... to add a new key)", recipe=recipe, key=dotted)


def _parse_value(raw: str, override: str, recipe: str) -> Any:
    if raw == "":
        return ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise RecipeError(f"cannot parse the value of override '{override}': {err}", recipe=recipe) from err
    if isinstance(value, str):  # PyYAML reads "3e-3" (no dot) as a string; users mean a number
        try:
            return float(value) if any(c in value for c in "eE.") else int(value)
        except ValueError:
            return value
    return value


def apply_override(cfg: DictConfig, override: str, recipe: str = "<overrides>") -> None:
    """Apply one CLI override in place (see module docstring for the grammar)."""
    override = override.strip()
    if override.startswith("~"):
        dotted = override[1:].split("=", 1)[0]
        parent, leaf = _parent_and_leaf(cfg, dotted, recipe)
        if not isinstance(parent, DictConfig) or leaf not in parent:
            raise _unknown_key(parent, dotted, leaf, recipe)
        parent.pop(leaf)
        return
    if "=" not in override:
        raise RecipeError(f"override '{override}' is not key=value, +key=value or ~key", recipe=recipe)
    dotted, raw = override.split("=", 1)
    adding = dotted.startswith("+")
    dotted = dotted.lstrip("+")
    value = _parse_value(raw, override, recipe)
    try:
        parent, leaf = _parent_and_leaf(cfg, dotted, recipe)
    except RecipeError:
        if not adding:
            raise
        OmegaConf.update(cfg, dotted, value, merge=False, force_add=True)  # creates the missing parents
        return
    exists = leaf in parent if isinstance(parent, DictConfig) else True
    if not exists and not adding:
        raise _unknown_key(parent, dotted, leaf, recipe)
    current = parent[leaf] if exists and isinstance(parent, DictConfig) else None
    if isinstance(current, DictConfig) and "_target_" in current and isinstance(value, str):
        current["_target_"] = value  # model.compressor=pool shorthand
        return
    OmegaConf.update(cfg, dotted, value, merge=False, force_add=True)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Load ``path`` (+ its ``_base_``), apply ``overrides``, and remember where it came from.

    Interpolations (``${name}``) stay lazy; :func:`resolve_recipe` resolves them.
    """
    path = Path(path)
    cfg = _with_base(path)
    for override in overrides:
        apply_override(cfg, override, recipe=str(path))
    cfg[RECIPE_PATH_KEY] = str(path)
    return cfg


def recipe_path(cfg: DictConfig) -> str:
    """The file a recipe was loaded from (or ``<recipe>``)."""
    return str(cfg.get(RECIPE_PATH_KEY, "<recipe>"))


def resolve_recipe(cfg: DictConfig) -> DictConfig:
    """A copy with every interpolation resolved (errors name the key)."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise RecipeError(f"cannot resolve interpolation: {err}", recipe=recipe_path(cfg), key=key) from err
    return OmegaConf.create(container)  # type: ignore[return-value]


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved recipe as YAML text (without the bookkeeping key)."""
    resolved = resolve_recipe(cfg)
    resolved.pop(RECIPE_PATH_KEY, None)
    return OmegaConf.to_yaml(resolved)


def save_recipe(cfg: DictConfig, directory: str | Path, name: str = "recipe.yaml") -> Path:
    """Write the fully resolved recipe into ``directory`` and return its path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    target.write_text(to_yaml(cfg))
    return target
