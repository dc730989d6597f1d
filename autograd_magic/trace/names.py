"""The names a cell's code uses: plain text helpers shared by capture and analysis."""

from __future__ import annotations

import ast
import functools
import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def base_name(display: str) -> str:
    """`b` for `b (line 3)`; `model` for `model.0.weight`."""
    return display.split(" (")[0].split(".")[0]


@functools.lru_cache(maxsize=8)  # capture and analysis ask about the same cell: parse a long one once
def identifiers(source: str) -> frozenset[str]:
    """The variable names a cell's code uses (comments and strings do not count)."""
    return frozenset(_identifiers(source))


def _identifiers(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(_IDENT.findall(source))  # IPython syntax (%magic, !cmd): fall back to words
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
