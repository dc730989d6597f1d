"""The names a cell's code uses: plain text helpers shared by capture and analysis."""

from __future__ import annotations

import ast
import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def base_name(display: str) -> str:
    """`b` for `b (line 3)`; `model` for `model.0.weight`."""
    return display.split(" (")[0].split(".")[0]


def identifiers(source: str) -> set[str]:
    """The variable names a cell's code uses (comments and strings do not count)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(_IDENT.findall(source))  # IPython syntax (%magic, !cmd): fall back to words
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
