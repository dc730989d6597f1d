"""Where a value came from and where it went, read off the trace (pure helpers for the checks)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..trace.events import BackwardEvent, OpEvent, Site, TensorInfo, Trace
from .naming import Names

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


def written(op: OpEvent) -> TensorInfo | None:
    """The tensor an in-place op wrote: ``self`` (``x.add_``, ``x[0] = 1``), or ``out=`` (given last)."""
    if not op.inputs:
        return None
    if op.func.endswith("_") or op.func.startswith("__i") or op.func == "__setitem__":
        return op.inputs[0]
    return op.inputs[-1]


def where(site: Site) -> str:
    """``line 3``, or ``line 3 of cell In [7]`` for a site recorded in an earlier cell."""
    return f"line {site.line}" if site.cell is None else f"line {site.line} of cell In [{site.cell}]"


def overlaps(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]
