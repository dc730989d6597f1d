"""Checks on the gradients backward produced: grad-accumulated, grad-summed and saved-tensor-mutated."""

from __future__ import annotations

import re

from ...report.model import Diagnostic
from ...trace.events import BackwardEvent, GradEvent, GraphNode, OpEvent, TensorInfo, Trace
from ..lineage import (
    base_name,
    describe_grads,
    describe_names,
    info_of,
    leaf_name,
    overlaps,
    succeeded,
    user_names,
    written,
)
from ..naming import Names

_SHOWN_LEAVES = 4
_STEP = re.compile(r"([A-Za-z_][\w.]*)\.step\(")
_UPDATED_BY_DESIGN = frozenset({"running_mean", "running_var"})  # batch norm updates them; training ignores them


# -- grad-accumulated ------------------------------------------------------------------------
def check_grad_accumulated(trace: Trace, names: Names) -> list[Diagnostic]:
    """A leaf's .grad summed over repeated runs of one backward, with an update or read in between."""
    found = []
    for event in succeeded(trace):
        if event.func != "backward":
            continue
        earlier = _earlier_at_site(trace, event)
        stale = [g for g in event.leaf_grads if g.had_grad and _accumulated(trace, event, earlier, g)
                 and not _name_moved_off(trace, names, g.tid, event.seq)]
        if stale:
            found.append(_accumulated_diagnostic(trace, names, event, earlier, stale))
    return found


def _name_moved_off(trace: Trace, names: Names, tid: int, before: int) -> bool:
    """``w = w - lr * w.grad``: the leaf's name now holds a computed tensor; nonleaf-grad explains that road."""
    own = {base_name(n) for n in names.all(tid)}
    return any(op.seq < before and not op.inplace and op.target in own and any(i.tid == tid for i in op.inputs)
               and op.outputs and not op.outputs[0].is_leaf for op in trace.ops)


def _earlier_at_site(trace: Trace, event: BackwardEvent) -> BackwardEvent | None:
    same = [b for b in succeeded(trace) if b.seq < event.seq and b.site.line == event.site.line
            and b.site.code == event.site.code and b.leaf_grads]
    return same[-1] if same else None


def _accumulated(trace: Trace, event: BackwardEvent, earlier: BackwardEvent | None, grad: GradEvent) -> bool:
    if earlier is None:
        return grad.repeated_site  # the previous run of this cell wrote it last, and nothing cleared it
    if grad.tid not in {g.tid for g in earlier.leaf_grads}:
        return False
    return _never_cleared(trace, grad.tid, earlier.seq, event.seq) and _used_between(trace, earlier, event.seq)


def _never_cleared(trace: Trace, tid: int, start: int, stop: int) -> bool:
    """Every backward that wrote the leaf in between found .grad already set: nobody zeroed it."""
    for other in succeeded(trace):
        if start < other.seq < stop:
            seen = next((g for g in other.leaf_grads if g.tid == tid), None)
            if seen is not None and not seen.had_grad:
                return False  # zero_grad() ran before this one (a GAN's second loss, say)
    return True


def _used_between(trace: Trace, earlier: BackwardEvent, stop: int) -> bool:
    """The gradients of ``earlier`` were used (an update, or a read of .grad) before the next pass.

    Gradient accumulation on purpose (several backwards, then one ``step()``) does neither. Any leaf
    of that pass counts: only the first few calls per call site are recorded in detail.
    """
    leaves = {g.tid for g in earlier.leaf_grads}
    for op in trace.ops:
        if not earlier.seq < op.seq < stop or not op.inputs or op.error:
            continue
        if op.func == "grad.__get__" and op.inputs[0].tid in leaves:
            return True
        if op.inplace and any(i.tid in leaves for i in op.inputs[:1] + _listed(op)):
            return True
    return False


def _listed(op: OpEvent) -> tuple[TensorInfo, ...]:
    """``torch._foreach_add_(params, ...)`` updates every tensor of its first list."""
    return op.inputs if op.func.startswith("_foreach") else ()


def _accumulated_diagnostic(trace: Trace, names: Names, event: BackwardEvent, earlier: BackwardEvent | None,
                            stale: list[GradEvent]) -> Diagnostic:
    leaves = [leaf_name(trace, names, g.tid) or "a parameter" for g in stale]
    shown = describe_grads(leaves[:_SHOWN_LEAVES]) + (" ..." if len(leaves) > _SHOWN_LEAVES else "")
    when = ("by an earlier iteration of this loop, and the values were used in between (an update or a read)"
            if earlier is not None else "by an earlier run of this same line (re-running the cell)")
    return Diagnostic(
        "grad-accumulated", "warning", event.site.line, event.site.code, user_names(leaves),
        f"{shown} already held a gradient, written {when}. backward adds to .grad instead of replacing it, so "
        f"after `{event.site.expr or event.site.code}` at line {event.site.line} it holds the sum over several "
        f"passes, and every step uses a stale, growing gradient.\n"
        f"Fix: clear the gradients before each backward: {_zero_grad_fix(trace, leaves[0])}.")


def _zero_grad_fix(trace: Trace, leaf: str) -> str:
    """`opt.zero_grad()` with the cell's own optimizer name, else the generic forms."""
    stepping = next((m.group(1) for op in trace.ops if (m := _STEP.search(op.site.code))), None)
    module = base_name(leaf).split(".")[0]
    if stepping:
        return f"`{stepping}.zero_grad()` at the top of the loop (before the forward pass)"
    if "." in base_name(leaf):
        return f"`{module}.zero_grad()` at the top of the loop"
    return f"`{module}.grad = None` (or `optimizer.zero_grad()`) before each backward"


# -- grad-summed ---------------------------------------------------------------------------------
def check_grad_summed(trace: Trace, names: Names) -> list[Diagnostic]:
    """A read of ``.grad`` after several backward calls with no update and no clearing between: a sum.

    A note, not a warning: gradient accumulation (several batches, then one step) does exactly this.
    """
    found: dict[int | None, Diagnostic] = {}
    for read in trace.ops:
        if read.func != "grad.__get__" or not read.inputs or not read.outputs or read.error:
            continue  # an empty .grad (None) holds no sum
        calls = _summed_calls(trace, read.inputs[0].tid, read.seq)
        if calls is None or read.site.line in found:
            continue
        leaf = leaf_name(trace, names, read.inputs[0].tid) or "the leaf"
        found[read.site.line] = _summed_note(read, leaf, *calls)
    return list(found.values())


def _summed_calls(trace: Trace, tid: int, before: int) -> tuple[list[BackwardEvent], int] | None:
    """The backward calls whose sum ``tid``'s .grad holds at ``before`` (latest first), and how many passes.

    Going back from the read, passes count while each found .grad already set and nothing touched
    the leaf between them (an update, or a read that used the gradient). A call site past the detail
    cap is recorded once per call only in its count: its passes are all of its calls.
    """
    run: list[BackwardEvent] = []
    stop = before
    for event in reversed([b for b in succeeded(trace) if b.seq < before and b.func == "backward"]):
        grad = next((g for g in event.leaf_grads if g.tid == tid), None)
        if grad is None:
            continue
        if _touched(trace, tid, event.seq, stop):
            break
        run.append(event)
        stop = event.seq
        if not grad.had_grad:
            break
    if not run:
        return None
    by_site = {(e.site.line, e.site.code): e.calls for e in run}
    whole = all(sum(1 for b in succeeded(trace) if (b.site.line, b.site.code) == site and b.leaf_grads) ==
                sum(1 for e in run if (e.site.line, e.site.code) == site) for site in by_site)
    count = sum(by_site.values()) if whole else len(run)
    return (run, count) if count > 1 else None


def _touched(trace: Trace, tid: int, start: int, stop: int) -> bool:
    """Between two events, the leaf was updated in place or its .grad read."""
    for op in trace.ops:
        if start < op.seq < stop and op.inputs and not op.error:
            if op.func == "grad.__get__" and op.inputs[0].tid == tid:
                return True
            if op.inplace and any(i.tid == tid for i in op.inputs[:1] + _listed(op)):
                return True
    return False


def _summed_note(read: OpEvent, leaf: str, run: list[BackwardEvent], count: int) -> Diagnostic:
    grad = describe_grads([leaf])
    lines = sorted({e.site.line for e in run if e.site.line is not None})
    last = run[0]
    backward = (f"`{last.site.expr or last.site.code}` at line {last.site.line} ran {count} times" if len(lines) == 1
                else f"backward ran {count} times (lines {', '.join(map(str, lines))})")
    return Diagnostic(
        "grad-summed", "note", read.site.line, read.site.code, user_names([leaf]),
        f"{grad} at line {read.site.line} holds the sum of {count} gradients: {backward} with "
        f"no update and no `zero_grad()` between, and backward adds onto .grad. That is right for gradient "
        f"accumulation (several batches, then one step); for only the last pass's gradient, clear it before "
        f"each backward: {_zero_grad_fix_at(leaf)}.")


def _zero_grad_fix_at(leaf: str) -> str:
    name = base_name(leaf)
    return f"`{name.split('.')[0]}.zero_grad()`" if "." in name else f"`{name}.grad = None`"


# -- saved-tensor-mutated ---------------------------------------------------------------------
def check_saved_tensor_mutated(trace: Trace, names: Names) -> list[Diagnostic]:
    """A value saved for backward changed behind autograd's back: backward silently used the new one."""
    found = []
    for event in succeeded(trace):
        through_data = _stale_through_data(trace, names, event)
        found.extend(through_data)
        found.extend(_stale_from_capture(trace, names, event, {d.message for d in through_data}))
    return found


def _stale_from_capture(trace: Trace, names: Names, event: BackwardEvent, known: set[str]) -> list[Diagnostic]:
    """Saved values capture found changed with an unchanged version counter (a NumPy or ``.data`` write)."""
    out = []
    nodes = {n.nid: n for n in event.graph.nodes} if event.graph else {}
    tracked = {target.tid for op in trace.ops if op.inplace and not op.error and (target := written(op))}
    for nid, saved, tid in event.stale_saved:
        node = nodes.get(nid)
        if node is None or saved in _UPDATED_BY_DESIGN or tid in tracked:
            continue  # an in-place torch op bumps the version: autograd itself raises if that mattered
        if any(node.label in message for message in known):
            continue  # already explained, with the line of the write
        arrays = _arrays_over(trace, tid)
        involved = names.plain(tid)[:1] + names.plain(node.tid)[:1] + arrays
        how = (f"It was changed through the NumPy array {describe_names(arrays)}, which shares its memory"
               if arrays else "It was changed through a NumPy array or `.data`")
        out.append(_mutated(event, node, saved, None, involved, how + ": autograd cannot see such writes."))
    return out


def _arrays_over(trace: Trace, tid: int) -> list[str]:
    """Names of NumPy arrays over the memory of ``tid``."""
    info = info_of(trace, tid)
    memory = info.memory if info is not None else None
    return [n for n, i in trace.final.items() if i.kind == "ndarray" and overlaps(i.memory, memory)]


def _stale_through_data(trace: Trace, names: Names, event: BackwardEvent) -> list[Diagnostic]:
    """An in-place write through a ``.data`` alias of a tensor that a node of this backward had saved."""
    out = []
    nodes = {n.nid: n for n in event.graph.nodes} if event.graph else {}
    for read in (op for op in trace.ops if op.func == "data.__get__" and op.inputs and op.outputs):
        source, alias = read.inputs[0], read.outputs[0]
        for write in _writes_to(trace, alias, read.seq, event.seq):
            saver = _saver(trace, source, write.seq, nodes)
            if saver is None:
                continue
            op, node, saved = saver
            involved = names.plain(source.tid)[:1] + names.plain(alias.tid)[:1]
            how = (f"It was changed by `{write.site.expr or write.site.code}` at line {write.site.line}, through "
                   f"`.data`, which does not tell autograd (the tensor's version counter stays the same).")
            out.append(_mutated(event, node, saved, write, involved, how, op))
    return out


def _writes_to(trace: Trace, alias: TensorInfo, start: int, stop: int) -> list[OpEvent]:
    return [op for op in trace.ops if start < op.seq < stop and op.inplace and not op.error and op.inputs
            and (op.inputs[0].tid == alias.tid or overlaps(op.inputs[0].memory, alias.memory))]


def _saver(trace: Trace, source: TensorInfo, before: int,
           nodes: dict[int, GraphNode]) -> tuple[OpEvent, GraphNode, str] | None:
    """The op (in this backward's graph) that saved ``source`` before ``before``."""
    for op in trace.ops:
        if op.seq >= before or op.inplace or op.error or not op.grad_enabled or not op.outputs:
            continue
        node = nodes.get(op.outputs[0].node) if op.outputs[0].node is not None else None
        if node is None:
            continue
        saved = [s.split(":")[0] for s in node.saved]
        as_input = any(i.tid == source.tid for i in op.inputs) and any(s != "result" for s in saved)
        as_output = op.outputs[0].tid == source.tid and "result" in saved
        if as_input or as_output:
            return op, node, "result" if as_output else next(s for s in saved if s != "result")
    return None


def _mutated(event: BackwardEvent, node: GraphNode, saved: str, write: OpEvent | None, involved: list[str],
             how: str, saver: OpEvent | None = None) -> Diagnostic:
    site = saver.site if saver is not None else node.site
    where = f" at line {site.line} (`{site.code}`)" if site is not None and site.line else ""
    line, code = (write.site.line, write.site.code) if write else (event.site.line, event.site.code)
    return Diagnostic(
        "saved-tensor-mutated", "warning", line, code, user_names(involved),
        f"{node.label}{where} saved `{saved}` for backward, and its values changed afterwards without autograd "
        f"noticing. {how} So `{event.site.expr or event.site.code}` at line {event.site.line} used the new values: "
        f"the gradients are silently wrong, and no error was raised.\n"
        f"Fix: change a copy instead (`.clone()` before editing, `.numpy().copy()` for an array), or make the "
        f"change on the tensor itself under `torch.no_grad()`, which autograd tracks and reports if it matters.")
