"""Run a cell's code the way IPython's own ``%%time`` does.

transform_cell (so ``!cmd`` and ``%magic`` lines work) → compile.cache (so
tracebacks and linecache show the cell) → exec the body in the user namespace
→ eval a trailing expression and return its value, so it displays as Out[n].
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from types import CodeType
from typing import Any

from IPython.core.displayhook import DisplayHook


@dataclass(frozen=True)
class CompiledCell:
    """A cell ready to run: its transformed source, filename and code objects."""

    source: str
    filename: str
    body: CodeType | None
    last_expr: CodeType | None
    quiet: bool = False  # the cell ends in ';': its value is not displayed


def compile_cell(shell: Any, cell: str) -> CompiledCell:
    """Compile a cell; SyntaxError propagates as in a plain cell."""
    source = shell.transform_cell(cell)
    filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
    tree = shell.compile.ast_parse(source, filename=filename)
    tree = shell.transform_ast(tree)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = shell.compile(tree, filename, "exec") if tree.body else None
    expr = shell.compile(last, filename, "eval") if last else None
    return CompiledCell(source, filename, body, expr, DisplayHook.semicolon_at_end_of_expression(source))


def run_compiled(shell: Any, cell: CompiledCell) -> Any:
    """Execute the cell in the user namespace; returns the trailing expression's value."""
    __tracebackhide__ = True  # noqa: F841 - IPython hides this frame in tracebacks
    if cell.body is not None:
        exec(cell.body, shell.user_global_ns, shell.user_ns)
    if cell.last_expr is not None:
        value = eval(cell.last_expr, shell.user_global_ns, shell.user_ns)
        # IPython checks for ';' on the magic call, not the cell body: suppress here as a plain cell would
        return None if cell.quiet else value
    return None
