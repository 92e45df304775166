"""The package layers hold: every module's imports (module-level and function-level, absolute and relative, and
``importlib.import_module("vidtempo...")`` literals) point to its own package or to a strictly lower layer, and
the module import graph has no cycle.

Layers, top to bottom::

    cli -> {eval, prefgen, serving} -> {training, inference, synth} -> models -> data -> config
        -> {registry, utils, vidtempo/__init__.py and any other top-level module}

Modules of one layer but different packages do not import each other (eval does not import prefgen; training
does not import synth). On top of the layers, evaluation does not depend on training code (``INDEPENDENT``):
what eval and training both need (summed log-probs) lives in a lower, neutral module. Registry alias strings
("vidtempo.models.encoders.cnn:FrameCNN") are data, not imports, and are not counted. A package ``__init__``'s ``_LAZY`` table (name -> module imported on first
attribute access) counts as imports of that ``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "vidtempo"

# package (first component under vidtempo; "" for top-level modules) -> layer, higher imports lower
LAYERS: dict[str, int] = {
    "cli": 6,
    "eval": 5,
    "prefgen": 5,
    "serving": 5,
    "training": 4,
    "inference": 4,
    "synth": 4,
    "models": 3,
    "data": 2,
    "config": 1,
    "registry": 0,
    "utils": 0,
    "": 0,  # vidtempo/__init__.py and any other top-level module
}

# (importing package, imported package) pairs forbidden although the layers would allow them, with the reason
INDEPENDENT: dict[tuple[str, str], str] = {
    ("eval", "training"): "a checkpoint is evaluated with models/ and inference/ code only",
    ("prefgen", "training"): "pairs are generated with models/ and inference/ code only",
    ("serving", "training"): "a checkpoint is served with models/ and inference/ code only",
}

# (importing module, imported module) pairs tolerated until the files reserved for another refactor are fixed;
# each entry with a one-line reason comment. Remove an entry as soon as its import is gone (a stale entry fails
# test_allowed_for_now_entries_are_still_needed).
ALLOWED_FOR_NOW: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    target: str  # the imported vidtempo module (most specific existing module)


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module under vidtempo/ (packages by their ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def package_of(module: str) -> str:
    """First component under ``vidtempo`` for sub-packages; "" for ``vidtempo`` and other top-level modules.

    Example: ``vidtempo.models.encoders.cnn`` -> "models", ``vidtempo.registry`` -> "registry".
    """
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if (ROOT / parts[1]).is_dir():
        return parts[1]
    return parts[1] if parts[1] in LAYERS else ""


def layer_of(module: str) -> int:
    return LAYERS.get(package_of(module), LAYERS[""])


def resolve(name: str) -> str | None:
    """The most specific existing vidtempo module that ``name`` names (``a.b.attr`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        dotted = ".".join(parts)
        if dotted in MODULES:
            return dotted
        parts.pop()
    return None


def _is_import_module_call(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "import_module":
        return True
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


def imports_of(module: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vidtempo" and (target := resolve(alias.name)):
                    yield Import(module, node.lineno, target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "vidtempo":
                continue
            for alias in node.names:
                # `from pkg import sub` imports the submodule when one exists, else a name of pkg
                target = resolve(f"{base}.{alias.name}") if alias.name != "*" else resolve(base)
                if target:
                    yield Import(module, node.lineno, target)
        elif isinstance(node, ast.Call) and _is_import_module_call(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("vidtempo"):
                if target := resolve(arg.value):
                    yield Import(module, node.lineno, target)
        elif (
            is_package
            and isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            for value in node.value.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    if target := resolve(value.value):
                        yield Import(module, value.lineno, target)


def all_imports() -> list[Import]:
    return [imp for module, path in MODULES.items() for imp in imports_of(module, path) if imp.target != module]


IMPORTS = all_imports()


def allowed(imp: Import) -> bool:
    """Same package, or a strictly lower layer that is not declared independent."""
    src, dst = package_of(imp.module), package_of(imp.target)
    if src == dst:
        return True
    return layer_of(imp.target) < layer_of(imp.module) and (src, dst) not in INDEPENDENT


def test_walk_sees_the_packages_and_their_imports() -> None:
    assert {"vidtempo", "vidtempo.registry", "vidtempo.eval.runner", "vidtempo.models.encoders.cnn"} <= set(MODULES)
    assert {package_of(m) for m in MODULES} <= set(LAYERS), "a new package needs a layer in LAYERS"
    assert any(imp.module == "vidtempo.cli.main" and imp.target == "vidtempo.config.errors" for imp in IMPORTS), (
        "function-level imports must be seen"
    )


def test_relative_and_dynamic_imports_resolve(tmp_path: Path) -> None:
    source = (
        "from . import metrics\n"
        "from .parsing import parse_choice\n"
        "from .. import registry\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('vidtempo.training.losses')\n"
    )
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    found = {(i.line, i.target) for i in imports_of("vidtempo.eval.fake", fake)}
    assert found == {
        (1, "vidtempo.eval.metrics"),
        (2, "vidtempo.eval.parsing"),
        (3, "vidtempo.registry"),
        (6, "vidtempo.training.losses"),
    }


def test_no_upward_or_sideways_imports() -> None:
    bad = sorted(
        (imp for imp in IMPORTS if not allowed(imp) and (imp.module, imp.target) not in ALLOWED_FOR_NOW),
        key=lambda imp: (imp.module, imp.line, imp.target),
    )
    listing = "\n".join(
        f"  {imp.module}:{imp.line} imports {imp.target} "
        f"({package_of(imp.module) or 'top'}={layer_of(imp.module)} -> "
        f"{package_of(imp.target) or 'top'}={layer_of(imp.target)})"
        for imp in bad
    )
    assert not bad, f"{len(bad)} upward or sideways imports:\n{listing}"


def test_allowed_for_now_entries_are_still_needed() -> None:
    pairs = {(imp.module, imp.target) for imp in IMPORTS if not allowed(imp)}
    stale = ALLOWED_FOR_NOW - pairs
    assert not stale, f"remove these ALLOWED_FOR_NOW entries, the imports are gone or allowed: {sorted(stale)}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one node (Tarjan, iterative), sorted.

    Example: ``strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}})`` -> ``[["a", "b"]]``.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def find_cycle(graph: dict[str, set[str]], nodes: list[str]) -> list[str]:
    """One cycle ``[a, b, ..., a]`` through the first of ``nodes`` (a strongly connected component)."""
    inside = set(nodes)
    start = nodes[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first search back to start: the shortest cycle through it
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & inside):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{nodes} is not strongly connected")  # pragma: no cover


def test_cycle_detection() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}}
    assert strongly_connected(graph) == [["a", "b", "c"], ["d", "e"]]
    assert find_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    """Function-level and lazy imports count: a cycle hidden by them still couples the modules."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        graph[imp.module].add(imp.target)
    cycles = [" -> ".join(find_cycle(graph, component)) for component in strongly_connected(graph)]
    assert not cycles, f"{len(cycles)} import cycle(s):\n  " + "\n  ".join(cycles)
