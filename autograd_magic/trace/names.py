"""The names a cell's code uses: plain text helpers shared by capture and analysis."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Sequence

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def base_name(display: str) -> str:
    """`b` for `b (line 3)`; `model` for `model.0.weight`."""
    return display.split(" (")[0].split(".")[0]


@functools.lru_cache(maxsize=8)  # capture and every check read the same cell: a 5,000-line one is parsed once
def parsed(source: str) -> ast.Module | None:
    """The cell's syntax tree, shared: callers only read it. None for IPython syntax (%magic, !cmd)."""
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


@functools.lru_cache(maxsize=8)
def all_nodes(source: str) -> tuple[ast.AST, ...]:
    """Every node of the cell's tree, outer first (`ast.walk` order), walked once per cell."""
    tree = parsed(source)
    return () if tree is None else tuple(ast.walk(tree))


@functools.lru_cache(maxsize=8)  # capture and analysis ask about the same cell
def identifiers(source: str) -> frozenset[str]:
    """The variable names a cell's code uses (comments and strings do not count)."""
    return frozenset(_identifiers(source))


def _identifiers(source: str) -> set[str]:
    tree = parsed(source)
    if tree is None:
        return set(_IDENT.findall(source))  # IPython syntax (%magic, !cmd): fall back to words
    uses = _Uses()
    uses.visit(tree)
    return uses.found


class _Uses(ast.NodeVisitor):
    """Names read or written in the cell's own scope: a function's parameters and locals, and a
    comprehension's loop variables, are not the cell's variables (``def forward(self, x)`` does
    not use the notebook's ``x``)."""

    def __init__(self) -> None:
        self.found: set[str] = set()
        self._hidden: list[frozenset[str]] = [frozenset()]

    def visit_Name(self, node: ast.Name) -> None:
        if node.id not in self._hidden[-1]:
            self.found.add(node.id)

    def _scoped(self, scope: ast.AST, local: set[str], body: Sequence[ast.AST]) -> None:
        declared = {name for n in ast.walk(scope) if isinstance(n, (ast.Global, ast.Nonlocal)) for name in n.names}
        self._hidden.append(self._hidden[-1] | (local - declared))
        for part in body:
            self.visit(part)
        self._hidden.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        args = node.args
        for outer in [*args.defaults, *(d for d in args.kw_defaults if d is not None),
                      *getattr(node, "decorator_list", []), *filter(None, [getattr(node, "returns", None)])]:
            self.visit(outer)  # evaluated in the enclosing scope
        params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}
        body: Sequence[ast.AST] = node.body if isinstance(node.body, list) else [node.body]
        stored = {n.id for part in body for n in ast.walk(part) if isinstance(n, ast.Name)
                  and isinstance(n.ctx, (ast.Store, ast.Del))}
        self._scoped(node, params | stored, body)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        self.visit(node.generators[0].iter)  # the first iterable is evaluated outside
        targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        inner: list[ast.AST] = [node.generators[0].target, *node.generators[0].ifs]
        for generator in node.generators[1:]:
            inner += [generator.target, generator.iter, *generator.ifs]
        inner += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self._scoped(node, targets, inner)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension
