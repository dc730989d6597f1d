"""Where a value came from and where it went, read off the op events (pure)."""

from __future__ import annotations

import re

from .events import OpEvent, Site, TensorInfo, Trace
from .naming import Names

_LEADING_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


def producer(trace: Trace, tid: int, before: int | None = None) -> OpEvent | None:
    """The last op that output ``tid`` (before sequence number ``before``)."""
    found = None
    for op in trace.ops:
        if before is not None and op.seq >= before:
            break
        if any(out.tid == tid for out in op.outputs) and not op.inplace:
            found = op
    return found


def upstream(trace: Trace, tid: int, limit: int = 12) -> list[OpEvent]:
    """The chain of ops that produced ``tid``, nearest first (first input at each step)."""
    chain: list[OpEvent] = []
    seen: set[int] = set()
    current: int | None = tid
    while current is not None and len(chain) < limit and current not in seen:
        seen.add(current)
        op = producer(trace, current)
        if op is None:
            break
        chain.append(op)
        current = op.inputs[0].tid if op.inputs else None
    return chain


def downstream(trace: Trace, tid: int, after: int = 0) -> set[int]:
    """Every tid computed (transitively) from ``tid`` by ops after ``after``."""
    reached = {tid}
    for op in trace.ops:
        if op.seq <= after or op.inplace:
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


def written_name(site: Site) -> str | None:
    """The variable an in-place write went through: ``z`` in ``z[0] = 5``."""
    for text in (site.expr, site.code):
        match = _LEADING_NAME.match(text or "")
        if match:
            return match.group(1)
    return None


def describe_names(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def label(names: Names, info: TensorInfo | None, fallback: str = "a tensor") -> str:
    if info is None:
        return fallback
    return names.label(info.tid) or fallback


def overlaps(a: tuple[int, int] | None, b: tuple[int, int] | None) -> bool:
    return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]


def first_seen(trace: Trace, tid: int) -> int:
    """Sequence number at which an object first appeared (0: before the cell)."""
    for binding in trace.bindings:
        if binding.tid == tid and binding.seq == 0:
            return 0
    for op in trace.ops:
        if any(o.tid == tid for o in op.outputs):
            return op.seq
    return 0
