"""Read the cell's own source text: assignments, loop variables, the name a write went through (pure)."""

from __future__ import annotations

import ast
import re
from functools import lru_cache

from ..trace.events import OpEvent, Site, Trace
from ..trace.lines import source_line as source_line_of
from ..trace.names import all_nodes

_LEADING_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


def written_name(site: Site) -> str | None:
    """The variable an in-place write went through: ``z`` in ``z[0] = 5``."""
    for text in (site.expr, site.code):
        match = _LEADING_NAME.match(text or "")
        if match:
            return match.group(1)
    return None


def _statement(code: str) -> ast.stmt | None:
    try:
        body = ast.parse(code.strip()).body
    except SyntaxError:
        return None
    return body[0] if len(body) == 1 else None


def operand_text(op: OpEvent) -> str | None:
    """What the user wrote for the tensor ``op`` took: ``out.loss`` in ``out.loss.item()``.

    Only when the op's own expression in the cell is that call (``X.item()``, ``X.data``,
    ``torch.tensor(X)``); a call made inside a library function has no such text.
    """
    text = op.site.expr.strip()
    method = op.func.removesuffix(".__get__")
    try:
        node = ast.parse(text, mode="eval").body if text else None
    except SyntaxError:
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
        node = node.func.value  # x.item(), x.detach()
    elif isinstance(node, ast.Attribute) and node.attr == method:
        node = node.value  # x.data
    elif isinstance(node, ast.Call) and node.args and _called_name(node.func) == method:
        node = node.args[0]  # torch.tensor(x)
    else:
        return None
    return ast.get_source_segment(text, node)


def _called_name(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def assigned_name(code: str) -> str | None:
    """``total`` for ``total = total + loss`` or ``total += loss``; None for anything else."""
    stmt = _statement(code)
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)) and isinstance(stmt.target, ast.Name):
        return stmt.target.id
    return None


def assigned_value(code: str) -> str | None:
    """The right-hand side of a one-name assignment: ``x`` in ``z = x``."""
    stmt = _statement(code)
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return ast.get_source_segment(code.strip(), stmt.value)
    return None


def source_line(trace: Trace, line: int | None) -> str:
    return source_line_of(trace.source.splitlines(), line)


def tainted_names(source: str, seeds: set[str]) -> set[str]:
    """Names whose value (by assignment, transitively) depends on ``seeds``: flow through plain Python."""
    tainted = set(seeds)
    changed = True
    while changed:
        changed = False
        for used, stored in _flows(source):
            if used & tainted and not stored <= tainted:
                tainted |= stored
                changed = True
    return tainted


@lru_cache(maxsize=8)
def _flows(source: str) -> tuple[tuple[frozenset[str], frozenset[str]], ...]:
    """(names read, names written) for every assignment in the source."""
    flows = []
    for node in all_nodes(source):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            stored = frozenset(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            used = frozenset(n.id for n in ast.walk(node.value) if isinstance(n, ast.Name))
            flows.append((used, stored))
    return tuple(flows)


@lru_cache(maxsize=8)
def loop_names(source: str) -> frozenset[str]:
    """Names bound by ``for`` loops and comprehensions: ``p`` in ``for p in params``."""
    targets = [n.target for n in all_nodes(source) if isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension))]
    return frozenset(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))



def user_called(op: OpEvent, *words: str) -> bool:
    """The call was written in the cell (``x.detach()``), not made inside a library function."""
    text = op.site.expr or op.site.code
    return any(word in text for word in words)


_GRAD_OFF = re.compile(r"no_grad|inference_mode|set_grad_enabled|enable_grad")


def grad_context(source: str, line: int | None) -> str:
    """The block that turned recording off at ``line``: ``torch.inference_mode()``, ``torch.no_grad()``, ...

    Capture sees only that grad mode was off; the cell's text says which spelling did it.
    """
    return _grad_blocks(source).get(line or 0, "torch.no_grad()")


@lru_cache(maxsize=32)
def _grad_blocks(source: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for node in all_nodes(source):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            managers = [item.context_expr for item in node.items]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            managers = list(node.decorator_list)
        else:
            continue
        text = next((t for m in managers if _GRAD_OFF.search(t := ast.unparse(m))), None)
        if text is not None:
            for inner in range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1):
                found[inner] = text  # ast.walk is outer-first: the innermost block wins
    return found
