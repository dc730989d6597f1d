"""Checks on how values flow: graph-break, history-growing, nonleaf-grad."""

from __future__ import annotations

from .events import OpEvent, Trace
from .graphmodel import CUT_FUNCS
from .lineage import downstream, label, leaves_upstream, producer
from .naming import Names
from .report import Diagnostic

_HOW = {
    "detach": "`.detach()` returns a tensor with the same values but no history",
    "item": "`.item()` turns it into a plain Python number",
    "tolist": "`.tolist()` turns it into plain Python numbers",
    "numpy": "`.numpy()` turns it into a NumPy array, which autograd cannot see",
    ".data": "`.data` gives the values without history (and hides later in-place changes from autograd)",
    "torch.tensor": "`torch.tensor(...)` copies the values into a brand-new leaf with no history",
    "torch.as_tensor": "`torch.as_tensor(...)` makes a tensor with no history",
    "no_grad": "it was computed under `torch.no_grad()`, so nothing was recorded",
}
_CONVERSIONS = {"to", "cuda", "cpu", "double", "float", "half", "bfloat16", "type"}


def check_graph_break(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    backward_roots = {b.root.tid for b in trace.backwards if b.root is not None}
    reached_leaves = {n.tid for b in trace.backwards if b.graph for n in b.graph.nodes if n.label == "AccumulateGrad"}
    for op in trace.ops:
        how = _cut(op)
        if how is None:
            continue
        source = label(names, op.inputs[0], "a tensor that requires grad")
        result = names.label(op.outputs[0].tid) if op.outputs else None
        fed = bool(op.outputs) and bool(downstream(trace, op.outputs[0].tid, op.seq) & backward_roots)
        lost = [leaf for leaf in leaves_upstream(trace, op.inputs[0].tid) + _self_leaf(op) if leaf.tid not in reached_leaves]
        severity = "warning" if fed and lost else "note"
        message = f"`{op.site.expr or op.site.code}` cut `{source}` out of the graph: {_HOW[how]}."
        if result:
            message += f" `{result}` has no grad_fn, so backward cannot reach anything before it."
        if severity == "warning":
            message += (f"\nIt was then used in a backward pass, but {', '.join(f'`{label(names, leaf)}`' for leaf in lost)} "
                        "got no gradient through it. Keep the computation in torch (no `.detach()`/`.item()`/NumPy round "
                        "trip) where gradients must flow.")
        else:
            message += " That is fine for logging, plotting or targets that must not be trained."
        involved = tuple(n for n in (source, result) if n and not n.startswith("a tensor"))
        found.append(Diagnostic("graph-break", severity, op.site.line, op.site.code, involved, message))
    return found


def _self_leaf(op: OpEvent) -> list:
    first = op.inputs[0]
    return [first] if first.is_leaf and first.requires_grad else []


def _cut(op: OpEvent) -> str | None:
    if not op.inputs or op.error or op.inputs[0].kind != "tensor" or not op.inputs[0].requires_grad:
        return None
    how = CUT_FUNCS.get(op.func)
    if how == ".data" and not op.outputs:
        return None
    if how is not None:
        return how
    if not op.grad_enabled and op.outputs and not op.inplace and op.outputs[0].kind == "tensor":
        return "no_grad" if op.target else None  # a named value made under no_grad
    return None


def check_history_growing(trace: Trace, names: Names) -> list[Diagnostic]:
    """`total = total + loss` in a loop that also runs backward: the graph of `total` only grows."""
    found = []
    chains: dict[tuple[int | None, str | None], int] = {}
    last_out: dict[tuple[int | None, str | None], int] = {}
    backward_seqs = [b.seq for b in trace.backwards]
    for op in trace.ops:
        if not op.target or not op.outputs or not op.outputs[0].requires_grad or op.inplace:
            continue
        key = (op.site.line, op.target)
        previous = last_out.get(key)
        if previous is not None and any(i.tid == previous for i in op.inputs):
            chains[key] = chains.get(key, 0) + 1
        last_out[key] = op.outputs[0].tid
    for (line, target), links in chains.items():
        if links < 2 or not _backward_inside_loop(trace, line, target, backward_seqs):
            continue
        code = next(op.site.code for op in trace.ops if op.site.line == line)
        found.append(Diagnostic(
            "history-growing", "warning", line, code, (str(target),),
            f"`{target}` is rebuilt from itself on every loop iteration while requiring grad, so it keeps the whole "
            f"graph of every iteration alive: memory grows with each step.\n"
            f"Fix: accumulate a number, not a graph: `{target} += loss.item()` (or `loss.detach()`)."))
    return found


def _backward_inside_loop(trace: Trace, line: int | None, target: str | None, backward_seqs: list[int]) -> bool:
    seqs = [op.seq for op in trace.ops if op.site.line == line and op.target == target]
    return any(seqs[0] < b < seqs[-1] for b in backward_seqs)


def check_nonleaf_grad(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for op in trace.ops:
        if op.func != "grad.__get__" or not op.inputs or op.inputs[0].is_leaf:
            continue
        tensor = op.inputs[0]
        name = label(names, tensor, "this tensor")
        message = (f"`{name}.grad` is None: `{name}` is not a leaf (it has grad_fn={tensor.grad_fn}), and PyTorch only "
                   f"stores .grad on leaves.\nFix: read the gradient of the leaf it came from, or call "
                   f"`{name}.retain_grad()` before backward to keep this one.")
        trap = _conversion_trap(trace, tensor.tid)
        if trap is not None:
            message += (f"\nNote: line {trap.site.line} (`{trap.site.code}`) made `{name}` with `.{trap.func}(...)` after "
                        f"`requires_grad=True`, so `{name}` names the converted copy, not the leaf. Create it directly: "
                        "`torch.randn(..., device=device, dtype=..., requires_grad=True)`.")
        found.append(Diagnostic("nonleaf-grad", "warning", op.site.line, op.site.code, (name,), message))
    return found


def _conversion_trap(trace: Trace, tid: int) -> OpEvent | None:
    op = producer(trace, tid)
    if op is None or op.func not in _CONVERSIONS or not op.inputs:
        return None
    first = op.inputs[0]
    return op if first.is_leaf and first.requires_grad else None
