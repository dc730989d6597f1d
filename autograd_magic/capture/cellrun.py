"""Run a cell's code the way IPython runs a plain cell.

transform_cell (so ``!cmd`` and ``%magic`` lines work) → compile.cache under the
cell's own number (so tracebacks and linecache show ``Cell In[n]`` as plain) →
the shell's AST transformers → run each top-level statement as the shell's
``ast_node_interactivity`` asks (an expression shown as Out is returned, so it
displays as ``Out[n]`` exactly once) → top-level ``await`` as IPython allows it.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import Any

from IPython.core.displayhook import DisplayHook

from .compat import set_running_loop

_TOP_LEVEL_AWAIT = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)


@dataclass(frozen=True)
class CompiledCell:
    """A cell ready to run: its transformed source, filename and code objects."""

    source: str
    filename: str
    body: tuple[CodeType, ...]  # statements, in order; "single" ones show their value as plain would
    last_expr: CodeType | None  # the value the cell shows as Out[n], returned by `run_compiled`
    quiet: bool = False  # the cell ends in ';': its value is not displayed


def cell_number(shell: Any) -> int:
    """The running cell's In[n], as IPython itself shows it (IPython 9 counts ahead while a cell runs)."""
    hook = getattr(shell, "displayhook", None)
    number = getattr(hook, "prompt_count", None)
    return number if isinstance(number, int) else int(shell.execution_count)


def compile_cell(shell: Any, cell: str, number: int) -> CompiledCell:
    """Compile a cell; SyntaxError propagates as in a plain cell."""
    source = shell.transform_cell(cell)
    filename = shell.compile.cache(source, number, raw_code=cell)
    tree = shell.transform_ast(shell.compile.ast_parse(source, filename=filename))
    nodes = list(tree.body)
    shown, last = _interactive_split(nodes, getattr(shell, "ast_node_interactivity", "last_expr"))
    flags = _TOP_LEVEL_AWAIT if getattr(shell, "autoawait", True) else 0
    with shell.compile.extra_flags(flags):
        body = tuple(_compile_node(shell, node, filename, node in shown) for node in nodes)
        expr = shell.compile(ast.Expression(last), filename, "eval") if last is not None else None
    return CompiledCell(source, filename, body, expr, _ends_in_semicolon(source))


def _ends_in_semicolon(source: str) -> bool:
    """IPython's own test, which tokenizes the whole cell; only when the last line of code holds a ';'.

    A ';' that ends the cell's last expression sits on its last line that is neither blank nor a
    comment: without one there, the answer is no, and a 5,000-line cell is not tokenized again.
    """
    lines = source.rstrip().splitlines()
    last = next((line for line in reversed(lines) if line.strip() and not line.lstrip().startswith("#")), "")
    return ";" in last and bool(DisplayHook.semicolon_at_end_of_expression(source))


def _interactive_split(nodes: list[ast.stmt], mode: str) -> tuple[list[ast.stmt], ast.expr | None]:
    """Which statements display their values as they run, and the expression returned as Out.

    Mirrors ``InteractiveShell.run_ast_nodes``; ``nodes`` loses the returned last expression.
    """
    if not nodes:
        return [], None
    target = _single_target(nodes[-1]) if mode == "last_expr_or_assign" else None
    if target is not None:  # shows the assigned value, as IPython does
        shown = ast.Expr(ast.Name(target, ast.Load()))
        nodes.append(ast.fix_missing_locations(ast.copy_location(shown, nodes[-1])))
    tail = nodes[-1]
    last = tail.value if isinstance(tail, ast.Expr) and mode != "none" else None
    if last is not None:
        nodes.pop()
    if mode == "all":
        return list(nodes), last
    if mode == "last" and last is None and nodes:
        return nodes[-1:], None
    return [], last


def _single_target(node: ast.stmt) -> str | None:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        target = node.target
    else:
        return None
    return target.id if isinstance(target, ast.Name) else None


def _compile_node(shell: Any, node: ast.stmt, filename: str, shown: bool) -> CodeType:
    if shown:
        return shell.compile(ast.Interactive([node]), filename, "single")
    module = ast.Module([node], type_ignores=[])
    return shell.compile(module, filename, "exec")


def run_compiled(shell: Any, cell: CompiledCell, between: Callable[[], None] | None = None) -> Any:
    """Execute the cell in the user namespace; returns the trailing expression's value.

    ``between`` runs after each top-level statement, outside the user's code (the recorder puts back
    what a training loop left off).
    """
    __tracebackhide__ = True  # noqa: F841 - IPython hides this frame in tracebacks
    for code in cell.body:
        _run(shell, eval(code, shell.user_global_ns, shell.user_ns))
        if between is not None:
            between()
    if cell.last_expr is not None:
        value = _run(shell, eval(cell.last_expr, shell.user_global_ns, shell.user_ns))
        # IPython checks for ';' on the magic call, not the cell body: suppress here as a plain cell would
        return None if cell.quiet else value
    return None


def _run(shell: Any, value: Any) -> Any:
    """A statement compiled with top-level await returns a coroutine: run it to its end, here."""
    __tracebackhide__ = True  # noqa: F841
    if not inspect.iscoroutine(value):
        return value
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return shell.loop_runner(value)  # terminal IPython: the shell's own runner
    # in a kernel the cell already runs inside the kernel's loop, which cannot be re-entered: run this
    # coroutine to its end on a loop of its own, in this thread (so torch's thread-local modes still apply)
    loop = asyncio.new_event_loop()
    set_running_loop(None)
    try:
        return loop.run_until_complete(value)
    finally:
        set_running_loop(running)
        loop.close()
