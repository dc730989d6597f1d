"""The package tree is the architecture: imports point down the layers only, and nothing imports in a circle.

Every import counts — module level, inside functions and under ``TYPE_CHECKING`` — because a
type-only import upward is still a dependency a reader has to hold in mind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autograd_magic"

# top to bottom: a module may import its own layer or any layer below it, never one above
LAYERS = ("__main__", "magic", "script", "capture", "analysis", "views", "report", "trace", "internal")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every autograd_magic module ``path`` imports, resolved to dotted names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("autograd_magic"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("autograd_magic"):
                target = node.module
            else:
                continue
            for alias in node.names:  # `from .. import internal` imports a module, not the package
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in modules else target)
    return {m for m in found if m in modules and m != name}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__ (the public API)


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer() -> None:
    strays = [m for m in import_graph() if layer_of(m) is not None and layer_of(m) not in LAYERS]
    assert strays == []


def test_imports_point_down_the_layers_only() -> None:
    upward = []
    for module, imports in import_graph().items():
        here = layer_of(module)
        if here is None:
            continue
        for target in imports:
            there = layer_of(target)
            if there is None or LAYERS.index(there) < LAYERS.index(here):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_module_imports_in_a_circle() -> None:
    graph = import_graph()
    # a package's __init__ re-exports its modules; importing a module through it is not a circle
    edges = {m: {t for t in ts if not (m.startswith(t + ".") and t in graph)} for m, ts in graph.items()}
    state: dict[str, int] = {}
    circles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else target)
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("source, expected", [
    ("from ..trace.events import Site", "autograd_magic.trace.events"),
    ("from .. import internal", "autograd_magic.internal"),
    ("import autograd_magic.views.text", "autograd_magic.views.text"),
])
def test_the_walker_resolves_relative_and_absolute_imports(tmp_path: Path, source: str, expected: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = PACKAGE / "capture" / "recorder.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == fake else "")
    assert expected in imported_modules(fake)
