"""Checks for memory shared between names: alias-write and shared-memory."""

from __future__ import annotations

from .events import OpEvent, TensorInfo, Trace
from .lineage import describe_names, first_seen, overlaps, written_name
from .naming import Names
from .report import Diagnostic

_SHARING_FUNCS = {"numpy": "`.numpy()`", "data.__get__": "`.data`", "as_tensor": "`torch.as_tensor`",
                  "from_numpy": "`torch.from_numpy`", "asarray": "`torch.asarray`"}


def check_alias_write(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for op in trace.ops:
        if not op.inplace or op.error or not op.inputs or op.inputs[0].kind != "tensor":
            continue
        seers = _who_sees(trace, names, op)
        if len(seers) >= 2:
            found.append(_alias_diagnostic(trace, names, op, seers))
    return found


def _who_sees(trace: Trace, names: Names, op: OpEvent) -> list[str]:
    """Plain names that see a write to ``op``'s target: the same object or shared memory."""
    target = op.inputs[0]
    via = written_name(op.site)
    seers = names.plain(target.tid) if _still_named(trace, target.tid) else []
    for name, info in trace.final.items():
        if info.tid == target.tid or name in names.qualified or name in seers:
            continue
        if overlaps(info.memory, target.memory) and first_seen(trace, info.tid) < op.seq:
            seers.append(name)
    if via in seers:  # the name written through comes first
        seers.remove(via)
        seers.insert(0, via)
    return seers


def _still_named(trace: Trace, tid: int) -> bool:
    return any(info.tid == tid for info in trace.final.values())


def _alias_diagnostic(trace: Trace, names: Names, op: OpEvent, seers: list[str]) -> Diagnostic:
    via, others = seers[0], seers[1:]
    target = op.inputs[0]
    how = []
    for other in others:
        info = trace.final.get(other)
        if info is not None and info.tid == target.tid:
            line = names.line_of.get(other) or names.line_of.get(via)
            how.append(f"`{other}` and `{via}` are two names for the same tensor"
                       + (f" (bound at line {line})" if line else "") + ": `=` never copies a tensor.")
        elif info is not None and info.kind == "ndarray":
            how.append(f"`{other}` is a NumPy array that shares memory with it (made by `.numpy()` or `torch.from_numpy`).")
        else:
            how.append(f"`{other}` shares its storage (a view, `.detach()` or `.data`).")
    message = (
        f"The in-place write `{op.site.expr or op.site.code}` at line {op.site.line} through `{via}` also changed "
        f"{describe_names(others)}.\n" + "\n".join(how) +
        f"\nFix: if `{via}` should be independent, make it a copy first: `{via} = {_source_of(others[0])}.clone()`"
        " (or `.copy()` for a NumPy array), or use an out-of-place op."
    )
    return Diagnostic("alias-write", "warning", op.site.line, op.site.code, tuple(seers), message)


def _source_of(name: str) -> str:
    return name


def check_shared_memory(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for op in trace.ops:
        how = _SHARING_FUNCS.get(op.func)
        if how is None or op.error or not op.inputs or not op.outputs:
            continue
        src, out = op.inputs[0], op.outputs[0]
        if not overlaps(src.memory, out.memory):
            continue  # a copy was made (dtype or device change)
        out_names, src_names = names.plain(out.tid), names.plain(src.tid)
        if not out_names:
            continue  # an unnamed temporary: nothing can be written through it later
        found.append(_sharing_diagnostic(op, how, out, out_names, src_names))
    found.extend(_untracked_sharing(trace, names, {d.names for d in found}))
    return found


def _sharing_diagnostic(op: OpEvent, how: str, out: TensorInfo, out_names: list[str], src_names: list[str]) -> Diagnostic:
    src = src_names[0] if src_names else "its source"
    kind = "NumPy array" if out.kind == "ndarray" else "tensor"
    message = (
        f"`{out_names[0]}` is a {kind} that shares memory with `{src}` ({how} copies nothing): "
        f"an in-place change to either one shows up in the other.\n"
        f"If you need an independent copy, use "
        + ("`x.detach().numpy().copy()`" if out.kind == "ndarray" else "`.clone()`") + "."
    )
    return Diagnostic("shared-memory", "note", op.site.line, op.site.code, tuple(out_names + src_names[:1]), message)


def _untracked_sharing(trace: Trace, names: Names, known: set[tuple[str, ...]]) -> list[Diagnostic]:
    """``torch.from_numpy`` is invisible to torch-function modes: find its result by memory."""
    found = []
    arrays = {n: i for n, i in trace.final.items() if i.kind == "ndarray"}
    for name, info in trace.final.items():
        if info.kind != "tensor" or name in names.qualified or first_seen(trace, info.tid) != 0 and _made_by_op(trace, info.tid):
            continue
        line = names.line_of.get(name)
        for array_name, array in arrays.items():
            if overlaps(info.memory, array.memory) and not any(name in k and array_name in k for k in known):
                if _bound_before(trace, name):
                    continue
                found.append(Diagnostic(
                    "shared-memory", "note", line, _code_at(trace, line), (name, array_name),
                    f"`{name}` is a tensor that shares memory with the NumPy array `{array_name}` "
                    f"(`torch.from_numpy` copies nothing): an in-place change to either one shows up in the other.\n"
                    f"If you need an independent copy, use `torch.tensor({array_name})`."))
    return found


def _made_by_op(trace: Trace, tid: int) -> bool:
    return any(o.tid == tid for op in trace.ops for o in op.outputs)


def _bound_before(trace: Trace, name: str) -> bool:
    info = trace.previous.get(name)
    return info is not None and info.tid == trace.final[name].tid


def _code_at(trace: Trace, line: int | None) -> str:
    if line is None:
        return ""
    lines = trace.source.splitlines()
    index = line - trace.first_line
    return lines[index].strip() if 0 <= index < len(lines) else ""
