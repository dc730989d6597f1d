"""Where a value came from and where it went, read off the trace (pure helpers for the checks)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from functools import lru_cache

from .events import BackwardEvent, OpEvent, Site, TensorInfo, Trace
from .naming import Names

_LEADING_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")
BACKWARD_FUNCS = frozenset({"backward", "grad"})


# -- producers and consumers -----------------------------------------------------
def producer(trace: Trace, tid: int, before: int | None = None) -> OpEvent | None:
    """The last op that made ``tid`` out of place (before sequence number ``before``)."""
    made = _producers(trace).get(tid, [])
    if before is not None:
        made = [op for op in made if op.seq < before]
    return made[-1] if made else None


_index: list[tuple[Trace, dict[int, list[OpEvent]]]] = []  # the last trace's index: checks ask many times


def _producers(trace: Trace) -> dict[int, list[OpEvent]]:
    if _index and _index[0][0] is trace:
        return _index[0][1]
    table: dict[int, list[OpEvent]] = {}
    for op in trace.ops:
        if not op.inplace and not op.error:
            for out in op.outputs:
                table.setdefault(out.tid, []).append(op)
    _index[:] = [(trace, table)]
    return table


def downstream(trace: Trace, tids: Iterable[int], after: int = 0) -> set[int]:
    """Every tid computed (transitively) from ``tids`` by out-of-place ops after ``after``."""
    reached = set(tids)
    for op in trace.ops:
        if op.seq <= after or op.inplace or op.error:
            continue
        if any(i.tid in reached for i in op.inputs):
            reached.update(o.tid for o in op.outputs)
    return reached


def leaves_upstream(trace: Trace, tid: int) -> list[TensorInfo]:
    """Leaves that require grad from which ``tid`` was computed, as the ops recorded them."""
    found: dict[int, TensorInfo] = {}
    frontier = [tid]
    seen: set[int] = set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        op = producer(trace, current)
        if op is None:
            continue
        for info in op.inputs:
            if info.kind == "tensor" and info.is_leaf and info.requires_grad:
                found[info.tid] = info
            frontier.append(info.tid)
    return list(found.values())


def info_of(trace: Trace, tid: int) -> TensorInfo | None:
    """The last description of ``tid`` the trace holds."""
    for info in trace.final.values():
        if info.tid == tid:
            return info
    found = None
    for op in trace.ops:
        for info in op.inputs + op.outputs:
            if info.tid == tid:
                found = info
    return found


def first_seen(trace: Trace, tid: int) -> int | None:
    """Sequence number at which an object first appeared: 0 before the cell, None if unknown."""
    if any(info.tid == tid for info in trace.previous.values()):
        return 0
    for op in trace.ops:
        if any(o.tid == tid for o in op.outputs) or any(i.tid == tid for i in op.inputs):
            return op.seq
    return None


# -- backward ----------------------------------------------------------------------
def succeeded(trace: Trace) -> list[BackwardEvent]:
    return [b for b in trace.backwards if b.error is None]


def reached_leaves(trace: Trace) -> set[int]:
    """tids of the leaves that some successful backward of the cell sent a gradient to."""
    reached: set[int] = set()
    for event in succeeded(trace):
        if event.graph is not None:
            reached.update(n.tid for n in event.graph.nodes if n.label == "AccumulateGrad" and n.tid is not None)
        reached.update(g.tid for g in event.leaf_grads)
    return reached


def backward_seqs(trace: Trace) -> list[int]:
    """Sequence numbers of every backward call, detailed or not (they are all on the op timeline)."""
    return [op.seq for op in trace.ops if op.func in BACKWARD_FUNCS and not op.outputs]


def failed_backwards(trace: Trace, pattern: re.Pattern[str]) -> list[BackwardEvent]:
    """Backward calls whose error matches and ended the cell (a caught error is the user's business)."""
    raised = raised_text(trace)
    return [b for b in trace.backwards if b.error and b.error == raised and pattern.search(b.error)]


_BACKWARD_CALL = re.compile(r"\.backward\(.*\)$", re.S)


def root_text(trace: Trace, names: Names, event: BackwardEvent) -> str:
    """The backwarded value as the user wrote it: its name, else ``(x * x)`` from ``(x * x).backward()``."""
    name = first_name(names, event.root, trace)
    if name:
        return name
    expr = event.site.expr or event.site.code
    head = _BACKWARD_CALL.sub("", expr)
    return head if head and head != expr else "the result"


def raised_text(trace: Trace) -> str | None:
    """The exception that ended the cell, as capture writes op errors: ``"Type: message"``."""
    return None if trace.error is None else f"{trace.error.type}: {trace.error.message}"


# -- names ---------------------------------------------------------------------------
def base_name(name: str) -> str:
    """``b`` for ``b (line 3)``: the variable the user typed (qualified names like ``model.0.weight`` stay)."""
    return name.split(" (", 1)[0]


_VERSION = re.compile(r"^(?:line (\d+)|(before this cell)|version (\d+)|in (\w+))\)$")


def show(name: str) -> str:
    """A name for a message: ``b (line 3)`` reads as `b` (as bound at line 3)."""
    base, _, rest = name.partition(" (")
    match = _VERSION.match(rest) if rest else None
    if not rest:
        return f"`{name}`"
    if match is None:
        return f"`{base}` ({rest}"
    line, before, version, scope = match.groups()
    if line:
        return f"`{base}` (as bound at line {line})"
    if before:
        return f"`{base}` (as it was before this cell)"
    return f"`{base}` (version {version})" if version else f"`{base}` (in `{scope}`)"


def show_attr(name: str, attr: str) -> str:
    """`x.grad` for ``x``; `b.grad` (as bound at line 3) for ``b (line 3)``."""
    base = base_name(name)
    rest = show(name)[len(base) + 2:]
    return f"`{base}.{attr}`{rest}"


def describe_grads(names: Iterable[str]) -> str:
    """`x.grad`, `w.grad` and `b.grad`."""
    shown = [show_attr(n, "grad") for n in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1] if shown else ".grad"


def user_names(*groups: Iterable[str | None]) -> tuple[str, ...]:
    """Unique plain variable names, in order, for `Diagnostic.names`."""
    out: dict[str, None] = {}
    for group in groups:
        for name in group:
            if name:
                out[base_name(name)] = None
    return tuple(out)


def first_name(names: Names, info: TensorInfo | None, trace: Trace | None = None) -> str | None:
    """The user's name for a tensor: one it still has at the end of the cell, if any, else the first plain one."""
    if info is None:
        return None
    if trace is not None:
        now = [n for n, i in trace.final.items() if i.tid == info.tid and n not in names.qualified]
        if now:
            return now[0]
    found = names.plain(info.tid)
    return found[0] if found else None


def leaf_name(trace: Trace, names: Names, tid: int) -> str | None:
    """A leaf's name: plain or qualified (``model.0.weight``), preferring what names it at the end of the cell."""
    now = sorted((n for n, i in trace.final.items() if i.tid == tid), key=lambda n: n in names.qualified)
    known = now or names.all(tid)
    return known[0] if known else None


def describe_names(names: Iterable[str]) -> str:
    quoted = [show(n) for n in names]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def value_text(trace: Trace, names: Names, info: TensorInfo | None, fallback: str = "the tensor") -> str:
    """How to call a value in a message: its name, else the expression that made it."""
    if info is None:
        return fallback
    name = first_name(names, info, trace)
    if name:
        return show(name)
    made = producer(trace, info.tid)
    if made is not None and made.site.expr:
        return f"`{made.site.expr}`"
    return fallback


# -- source text -----------------------------------------------------------------------
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
    if line is None:
        return ""
    lines = trace.source.splitlines()
    index = line - trace.first_line
    return lines[index].strip() if 0 <= index < len(lines) else ""


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
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()
    flows = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            stored = frozenset(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            used = frozenset(n.id for n in ast.walk(node.value) if isinstance(n, ast.Name))
            flows.append((used, stored))
    return tuple(flows)


def loop_names(source: str) -> set[str]:
    """Names bound by ``for`` loops and comprehensions: ``p`` in ``for p in params``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    targets = [n.target for n in ast.walk(tree) if isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension))]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def written(op: OpEvent) -> TensorInfo | None:
    """The tensor an in-place op wrote: ``self`` (``x.add_``, ``x[0] = 1``), or ``out=`` (given last)."""
    if not op.inputs:
        return None
    if op.func.endswith("_") or op.func.startswith("__i") or op.func == "__setitem__":
        return op.inputs[0]
    return op.inputs[-1]


def overlaps(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]


def user_called(op: OpEvent, *words: str) -> bool:
    """The call was written in the cell (``x.detach()``), not made inside a library function."""
    text = op.site.expr or op.site.code
    return any(word in text for word in words)
