"""Checks for memory shared between names: alias-write and shared-memory."""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from ...report.model import Diagnostic
from ...trace.events import OpEvent, Site, TensorInfo, Trace
from ..lineage import (
    base_name,
    describe_names,
    first_seen,
    overlaps,
    producer,
    show,
    user_names,
    where,
    written,
)
from ..naming import Names
from ..source import assigned_name, assigned_value, loop_names, source_line, written_name

SHARING_FUNCS = {"numpy": "`.numpy()`", "data.__get__": "`.data`", "as_tensor": "`torch.as_tensor`",
                 "asarray": "`torch.asarray`", "__array__": "`np.asarray`"}
BRIDGE_FUNCS = frozenset({"numpy", "as_tensor", "asarray", "__array__"})  # sharing the user asks for by name
_OUT_ARG = re.compile(r"\bout\s*=(?!=)")
_VIEW_HOW = {"detach": "with `.detach()`: a tensor over the same memory as {src}",
             "data.__get__": "with `.data`: a tensor over the same memory as {src}",
             "numpy": "with `.numpy()`: a NumPy array over the same memory as {src}"}


@dataclass(frozen=True)
class _Seer:
    """A name that sees an in-place write, and how it came to share the memory."""

    name: str
    info: TensorInfo
    same_object: bool


# -- alias-write ---------------------------------------------------------------------
def check_alias_write(trace: Trace, names: Names) -> list[Diagnostic]:
    """An in-place write through one name changed what another name shows."""
    found = []
    iterators = loop_names(trace.source)  # `for p in params: p -= ...` aliases on purpose
    undone = _undone_by_torch(trace)
    for op in trace.ops:
        target = written(op) if op.inplace and not op.error else None
        if target is None or target.kind != "tensor" or op.seq in undone:
            continue
        seers = _who_sees(trace, names, op, target, iterators)
        if len(seers) >= 2:
            found.append(_alias_diagnostic(trace, op, seers))
    return found


def _undone_by_torch(trace: Trace) -> set[int]:
    """Writes torch's own code made and then undid: it cloned the memory, wrote, and copied the clone back.

    gradcheck perturbs each input element this way and puts it back; a name sharing that memory never
    sees the perturbed values after the call, so nothing the user wrote aliased anything.
    """
    ops = [op for op in trace.ops if op.by_torch and not op.error]
    writes = [op for op in ops if op.inplace]
    saved: dict[int, OpEvent] = {}  # tid of a clone torch made -> the clone
    undone: set[int] = set()
    for op in ops:
        if op.func == "clone" and op.inputs and op.outputs:
            saved[op.outputs[0].tid] = op
        elif op.func == "copy_" and len(op.inputs) >= 2 and op.inputs[1].tid in saved:
            memory = saved[op.inputs[1].tid].inputs[0].memory
            if overlaps(memory, op.inputs[0].memory):
                start = saved[op.inputs[1].tid].seq
                undone.update(w.seq for w in writes if start <= w.seq <= op.seq
                              and overlaps(_memory_written(w), memory))
    return undone


def _memory_written(op: OpEvent) -> tuple[int, int] | None:
    target = written(op)
    return target.memory if target is not None else None


def _who_sees(trace: Trace, names: Names, op: OpEvent, target: TensorInfo, skip: AbstractSet[str]) -> list[_Seer]:
    """Plain names, as the cell left them, that show the memory ``op`` wrote: the written one first."""
    via = written_name(op.site)
    bound_here = {op.target, assigned_name(op.site.code)} - {via}  # `y = x.add_(1)` binds y after the write
    alive = any(info.tid == target.tid for info in trace.final.values())
    seers = []
    for name, info in trace.final.items():
        if name in names.qualified or name in skip or name in bound_here:
            continue
        if info.tid == target.tid:
            seers.append(_Seer(name, info, True))
        elif overlaps(info.memory, target.memory) and _existed_at(trace, info.tid, op.seq, alive):
            seers.append(_Seer(name, info, False))
    seers.sort(key=lambda s: (s.name != via, not s.same_object))
    return seers


def _existed_at(trace: Trace, tid: int, seq: int, target_alive: bool) -> bool:
    """Both alive at the end and overlapping means they share; otherwise memory may have been reused."""
    seen = first_seen(trace, tid)
    if seen is None:
        return target_alive
    return seen < seq


def _alias_diagnostic(trace: Trace, op: OpEvent, seers: list[_Seer]) -> Diagnostic:
    via, others = seers[0], seers[1:]
    write = op.site.expr or op.site.code
    relations = [_relation(trace, via, other) for other in others]
    deliberate = all(r.deliberate for r in relations)
    expected = ", as expected" if deliberate else ""
    lines = [f"The in-place write `{write}` at line {op.site.line} through {show(via.name)} also changed "
             f"{describe_names(s.name for s in others)}{expected}: they share memory."]
    lines.extend(r.text for r in relations)
    fixes = list(dict.fromkeys(r.fix for r in relations if r.fix))
    out_of_place = f"write out of place (`{via.name} = {via.name} + ...` makes a new tensor)."
    fixes.append(("or " if fixes else "") + out_of_place)
    lines.append(("If you want them independent: " if deliberate else "Fix: ") + "; ".join(fixes))
    # sharing the user asked for (`.numpy()`, `from_numpy`, `out=`) is the lesson, not a bug
    return Diagnostic("alias-write", "note" if deliberate else "warning", op.site.line, op.site.code,
                      user_names(s.name for s in seers), "\n".join(lines))


@dataclass(frozen=True)
class _Relation:
    """How two names came to share memory, the copy that would have kept them apart, and whether it was asked for."""

    text: str
    fix: str | None
    deliberate: bool


def _relation(trace: Trace, via: _Seer, other: _Seer) -> _Relation:
    """How ``other`` came to share ``via``'s memory (the write may go through a temporary such as ``a[0]``)."""
    if via.info.tid == other.info.tid:
        return _same_object(trace, via.name, other.name)
    later, earlier = _later_of(trace, via, other)
    made = _made_from(trace, later, earlier)
    if made is None and _made_from(trace, earlier, later) is not None:  # an array first met as an op's input
        later, earlier = earlier, later
        made = _made_from(trace, later, earlier)
    if made is not None:
        how = _VIEW_HOW.get(made.func, "a view of {src}").format(src=show(earlier.name))
        text = f"`{made.site.code}` at {where(made.site)} made {show(later.name)} {how}, not a copy."
        return _Relation(text, _copy_fix(made.site, later.info), made.func in BRIDGE_FUNCS)
    kind = "NumPy array" if later.info.kind == "ndarray" else "tensor"
    bridged = "ndarray" in (later.info.kind, earlier.info.kind)  # only the NumPy bridge shares with an array
    return _Relation(f"{show(later.name)} is a {kind} over the same memory as {show(earlier.name)} "
                     f"(`torch.from_numpy`, `.numpy()`, `.data` and views copy nothing).",
                     _unknown_copy_fix(later, earlier), bridged)


def _made_from(trace: Trace, made: _Seer, source: _Seer) -> OpEvent | None:
    """The op that made ``made``, when it did so from ``source`` (or from something over its memory)."""
    op = producer(trace, made.info.tid)
    if op is not None and any(i.tid == source.info.tid or overlaps(i.memory, source.info.memory) for i in op.inputs):
        return op
    chain = trace.provenance.get(made.info.tid, ())  # made in an earlier cell: its ids there are not ours
    mentions = re.compile(rf"\b{re.escape(base_name(source.name))}\b")
    if chain and chain[0].inputs and mentions.search(chain[0].site.code):
        return chain[0]
    return None


def _same_object(trace: Trace, via: str, other: str) -> _Relation:
    made = _bound_by_out(trace, via, other)
    if made is not None:
        return _Relation(f"`{made.site.code}` at {where(made.site)} wrote its result into the tensor given as "
                         f"`out=` and bound {show(made.target or other)} to that same tensor: `out=` copies nothing.",
                         None, True)
    line, code = _assignment_of(trace, via, other)
    if code is None:
        return _Relation(f"{show(other)} and {show(via)} are two names for one tensor: `=` never copies a tensor.",
                         f"`{other} = {via}.clone()` where `{other}` was bound makes an independent copy", False)
    value = assigned_value(code) or other
    target = code.split("=")[0].strip()
    return _Relation(f"`{code}` at line {line} made {show(target)} a second name for the same tensor: `=` never "
                     f"copies a tensor.", f"`{target} = {value}.clone()` at line {line} makes an independent copy",
                     False)


def _bound_by_out(trace: Trace, via: str, other: str) -> OpEvent | None:
    """The op ``d = torch.matmul(a, b, out=c)`` that bound one of the two names to the other's tensor
    (in this cell, or in the earlier cell that made one of them)."""
    earlier = [op for chain in trace.provenance.values() for op in chain[:1]]
    for op in [*trace.ops, *earlier]:
        target = written(op) if op.inplace and not op.error else None
        if target is not None and op.target in (via, other) and _OUT_ARG.search(op.site.expr or op.site.code):
            return op
    return None


def _assignment_of(trace: Trace, via: str, other: str) -> tuple[int | None, str | None]:
    """The line ``via = other`` or ``other = via``, from the cell's source."""
    for line, text in enumerate(trace.source.splitlines(), start=1):
        value = assigned_value(text)
        target = text.split("=")[0].strip()
        if {target, value} == {via, other}:
            return line, text.strip()
    return None, None


def _later_of(trace: Trace, a: _Seer, b: _Seer) -> tuple[_Seer, _Seer]:
    seen_a, seen_b = first_seen(trace, a.info.tid), first_seen(trace, b.info.tid)
    if seen_a is None or (seen_b is not None and seen_a > seen_b):
        return a, b
    return b, a


def _unknown_copy_fix(later: _Seer, earlier: _Seer) -> str:
    """The copy to make where the sharing began, when this cell does not show where that was."""
    if "ndarray" in (later.info.kind, earlier.info.kind):
        array, tensor = (later, earlier) if later.info.kind == "ndarray" else (earlier, later)
        arr, ten = base_name(array.name), base_name(tensor.name)
        return (f"copy where they were made (`{ten} = torch.tensor({arr})` instead of `torch.from_numpy`, or "
                f"`{arr} = {ten}.numpy().copy()`)")
    pair = sorted((base_name(later.name), base_name(earlier.name)))  # which was made from which is not recorded
    return f"`.clone()` where `{pair[0]}` or `{pair[1]}` was made from the other gives an independent copy"


def _copy_fix(site: Site, made: TensorInfo) -> str | None:
    value = assigned_value(site.code)
    if value is None:
        return None
    target = site.code.split("=")[0].strip()
    copy = ".copy()" if made.kind == "ndarray" else ".clone()"
    return f"`{target} = {value}{copy}` at {where(site)} makes an independent copy"


# -- shared-memory -----------------------------------------------------------------------
def check_shared_memory(trace: Trace, names: Names) -> list[Diagnostic]:
    """A named tensor/array starts sharing memory with another: note it where it happens."""
    found = []
    for op in trace.ops:
        how = SHARING_FUNCS.get(op.func)
        if how is None or op.error or not op.inputs or not op.outputs:
            continue
        out = op.outputs[0]
        out_names = names.plain(out.tid)
        sharers = _sharers(trace, names, op, out)
        if out_names and sharers:  # unnamed temporaries cannot be written later; a copy shares nothing
            found.append(_sharing_note(op.site.line, op.site.code, how, out, out_names[0], sharers))
    found.extend(_from_numpy_sharing(trace, names, {d.names for d in found}))
    return found


def _sharers(trace: Trace, names: Names, op: OpEvent, out: TensorInfo) -> list[str]:
    """Named values ``out`` shares memory with: its source, or what the source itself views (``y.detach()``)."""
    source = op.inputs[0]
    if not overlaps(source.memory, out.memory):
        return []
    direct = names.plain(source.tid)[:1]
    others = [n for n, info in trace.final.items() if info.tid not in (out.tid, source.tid)
              and n not in names.qualified and overlaps(info.memory, out.memory)
              and _existed_at(trace, info.tid, op.seq, True)]
    return direct + [n for n in others if n not in direct][: 1 if direct else 2]


def _sharing_note(line: int | None, code: str, how: str, out: TensorInfo, name: str, sources: list[str]) -> Diagnostic:
    copy = "`.copy()` on the array" if out.kind == "ndarray" else "`.clone()`"
    kind = "NumPy array" if out.kind == "ndarray" else "tensor"
    return Diagnostic("shared-memory", "note", line, code, user_names([name], sources),
                      f"{show(name)} is a {kind} that shares memory with {describe_names(sources)} ({how} copies "
                      f"nothing): an in-place change to either one shows up in the other.\n"
                      f"If you need an independent copy, use {copy}.")


def _from_numpy_sharing(trace: Trace, names: Names, known: set[tuple[str, ...]]) -> list[Diagnostic]:
    """``torch.from_numpy`` is invisible to torch-function modes: find its result by memory."""
    found = []
    arrays = {n: i for n, i in trace.final.items() if i.kind == "ndarray" and n not in names.qualified}
    for name, info in trace.final.items():
        if info.kind != "tensor" or name in names.qualified or not _new_without_op(trace, name, info):
            continue
        line = names.line_of.get(name)
        for array_name, array in arrays.items():
            if overlaps(info.memory, array.memory) and (name, array_name) not in known:
                found.append(Diagnostic(
                    "shared-memory", "note", line, source_line(trace, line), (name, array_name),
                    f"{show(name)} is a tensor that shares memory with the NumPy array {show(array_name)} "
                    f"(`torch.from_numpy` copies nothing): an in-place change to either one shows up in the other.\n"
                    f"If you need an independent copy, use `torch.tensor({array_name})`."))
    return found


def _new_without_op(trace: Trace, name: str, info: TensorInfo) -> bool:
    """Bound during the cell to a tensor that no recorded op made."""
    before = trace.previous.get(name)
    return (before is None or before.tid != info.tid) and producer(trace, info.tid) is None
