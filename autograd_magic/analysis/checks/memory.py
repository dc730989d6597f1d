"""Checks for memory shared between names: alias-write and shared-memory."""

from __future__ import annotations

from dataclasses import dataclass

from ...report.model import Diagnostic
from ...trace.events import OpEvent, TensorInfo, Trace
from ..lineage import describe_names, first_seen, overlaps, producer, show, user_names, written
from ..naming import Names
from ..source import assigned_name, assigned_value, loop_names, source_line, written_name

SHARING_FUNCS = {"numpy": "`.numpy()`", "data.__get__": "`.data`", "as_tensor": "`torch.as_tensor`",
                 "asarray": "`torch.asarray`", "__array__": "`np.asarray`"}
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
    for op in trace.ops:
        target = written(op) if op.inplace and not op.error else None
        if target is None or target.kind != "tensor":
            continue
        seers = _who_sees(trace, names, op, target, iterators)
        if len(seers) >= 2:
            found.append(_alias_diagnostic(trace, op, seers))
    return found


def _who_sees(trace: Trace, names: Names, op: OpEvent, target: TensorInfo, skip: set[str]) -> list[_Seer]:
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
    lines = [f"The in-place write `{write}` at line {op.site.line} through {show(via.name)} also changed "
             f"{describe_names(s.name for s in others)}: they share memory."]
    fixes = []
    for other in others:
        how, fix = _relation(trace, via, other)
        lines.append(how)
        if fix and fix not in fixes:
            fixes.append(fix)
    fixes.append(f"or write out of place (`{via.name} = {via.name} + ...` makes a new tensor).")
    lines.append("Fix: " + "; ".join(fixes))
    return Diagnostic("alias-write", "warning", op.site.line, op.site.code,
                      user_names(s.name for s in seers), "\n".join(lines))


def _relation(trace: Trace, via: _Seer, other: _Seer) -> tuple[str, str | None]:
    """How ``other`` came to share ``via``'s memory, and the copy that would have prevented it."""
    if other.same_object:
        return _same_object(trace, via.name, other.name)
    later, earlier = _later_of(trace, via, other)
    made = producer(trace, later.info.tid)
    if made is not None:
        how = _VIEW_HOW.get(made.func, "a view of {src}").format(src=show(earlier.name))
        text = f"`{made.site.code}` at line {made.site.line} made {show(later.name)} {how}, not a copy."
        return text, _copy_fix(made.site.code, made.site.line, later.info)
    kind = "NumPy array" if later.info.kind == "ndarray" else "tensor"
    return (f"{show(later.name)} is a {kind} over the same memory as {show(earlier.name)} "
            f"(`torch.from_numpy`, `.numpy()`, `.data` and views copy nothing)."), None


def _same_object(trace: Trace, via: str, other: str) -> tuple[str, str | None]:
    line, code = _assignment_of(trace, via, other)
    if code is None:
        return f"{show(other)} and {show(via)} are two names for one tensor: `=` never copies a tensor.", None
    value = assigned_value(code) or other
    target = code.split("=")[0].strip()
    return (f"`{code}` at line {line} made {show(target)} a second name for the same tensor: `=` never copies a "
            f"tensor."), f"`{target} = {value}.clone()` at line {line} makes an independent copy"


def _assignment_of(trace: Trace, via: str, other: str) -> tuple[int | None, str | None]:
    """The line ``via = other`` or ``other = via``, from the cell's source."""
    for offset, text in enumerate(trace.source.splitlines()):
        value = assigned_value(text)
        target = text.split("=")[0].strip()
        if {target, value} == {via, other}:
            return trace.first_line + offset, text.strip()
    return None, None


def _later_of(trace: Trace, a: _Seer, b: _Seer) -> tuple[_Seer, _Seer]:
    seen_a, seen_b = first_seen(trace, a.info.tid), first_seen(trace, b.info.tid)
    if seen_a is None or (seen_b is not None and seen_a > seen_b):
        return a, b
    return b, a


def _copy_fix(code: str, line: int | None, made: TensorInfo) -> str | None:
    value = assigned_value(code)
    if value is None:
        return None
    target = code.split("=")[0].strip()
    copy = ".copy()" if made.kind == "ndarray" else ".clone()"
    return f"`{target} = {value}{copy}` at line {line} makes an independent copy"


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
