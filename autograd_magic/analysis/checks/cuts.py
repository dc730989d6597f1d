"""Checks on values that left autograd: graph-break and no-gradient.

A cut is intended when it is an explicit stop-gradient (``.detach()``, ``.data``,
``torch.no_grad()``) whose result stays a tensor: a GAN discriminator step or a
DQN target. It is a likely bug when the value went through Python numbers or
NumPy (``.item()``, ``.numpy()``, ``torch.tensor(t)``) and came back into a loss
that was backwarded, leaving the leaves before the cut without gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...report.model import Diagnostic
from ...trace.events import CUT_FUNCS, OpEvent, TensorInfo, Trace
from ...trace.names import identifiers
from ..lineage import (
    describe_grads,
    describe_names,
    downstream,
    first_name,
    leaf_name,
    leaves_upstream,
    reached_leaves,
    show,
    succeeded,
    user_names,
    value_text,
)
from ..naming import Names
from ..source import assigned_name, grad_context, operand_text, tainted_names, user_called

# op func -> words in the source that show the user wrote the call (its name is events.CUT_FUNCS)
_WRITTEN_AS = {
    "detach": ("detach",), "detach_": ("detach_",), "data.__get__": (".data",), "item": (".item",),
    "tolist": (".tolist",), "numpy": (".numpy",), "tensor": ("tensor(",), "as_tensor": ("as_tensor(",),
}
_CUTS = {func: (CUT_FUNCS[func], words) for func, words in _WRITTEN_AS.items()}
_STOP_GRADIENTS = frozenset({"detach", ".data", "no_grad"})  # explicit: the user chose to stop gradients
_CONVERTERS = frozenset({"numpy", "item", "tolist", "tensor", "as_tensor"})
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


def _how(trace: Trace, cut: Cut) -> str:
    if cut.how == "no_grad":  # name the block the user wrote: inference_mode, set_grad_enabled(False), ...
        return f"it was computed under `{grad_context(trace.source, cut.op.site.line)}`, " \
               f"so nothing was recorded"
    return _HOW[cut.how]


@dataclass(frozen=True)
class Cut:
    """One place where a value that required grad left autograd, and what followed."""

    op: OpEvent
    how: str
    converted: bool  # left torch for Python/NumPy, not an explicit stop-gradient
    fed: bool  # its tensor value flowed into a root that a successful backward used
    fed_by_name: bool  # the same, following plain-Python assignments in the source
    lost: tuple[TensorInfo, ...]  # leaves upstream of the cut that no successful backward reached

    @property
    def harmful(self) -> bool:
        return self.converted and bool(self.lost)


def find_cuts(trace: Trace, names: Names) -> list[Cut]:
    reached = reached_leaves(trace)
    roots = {b.root.tid for b in succeeded(trace) if b.root is not None}
    later = succeeded(trace)
    out = []
    for op in trace.ops:
        how = _cut_how(op, names)
        if how is None:
            continue
        after = [b for b in later if b.seq > op.seq]
        fed = bool(after) and bool(op.outputs) and bool(downstream(trace, [o.tid for o in op.outputs], op.seq) & roots)
        first = op.inputs[0]
        upstream_leaves = leaves_upstream(trace, first.tid) + ([first] if first.is_leaf else [])
        lost = tuple({leaf.tid: leaf for leaf in upstream_leaves if leaf.tid not in reached}.values())
        out.append(Cut(op, how, _converted(trace, op, how), fed, bool(after) and _fed_by_name(trace, names, op, after),
                       lost))
    return out


def _cut_how(op: OpEvent, names: Names) -> str | None:
    if not op.inputs or op.error or op.inputs[0].kind != "tensor" or not op.inputs[0].requires_grad:
        return None
    known = _CUTS.get(op.func)
    if known is not None:
        how, words = known
        return how if user_called(op, *words) else None  # a library's internal detach() is not the user's cut
    if op.grad_enabled or op.inplace or not op.outputs or op.outputs[0].kind != "tensor" or op.scope != "<cell>":
        return None
    return "no_grad" if names.plain(op.outputs[0].tid) else None  # the named result of a no_grad block


def _converted(trace: Trace, op: OpEvent, how: str) -> bool:
    if how not in _STOP_GRADIENTS:
        return True
    outs = {o.tid for o in op.outputs}
    return any(later.func in _CONVERTERS and any(i.tid in outs for i in later.inputs)
               for later in trace.ops if later.seq > op.seq)  # x.detach().numpy(): a conversion, not a stop


def _fed_by_name(trace: Trace, names: Names, op: OpEvent, after: list) -> bool:
    seeds = {n for o in op.outputs for n in names.plain(o.tid)}
    target = assigned_name(op.site.code)
    if target:
        seeds.add(target)
    if not seeds:
        return False
    tainted = tainted_names(trace.source, seeds)
    return any(identifiers(b.site.expr or b.site.code) & tainted for b in after)


# -- graph-break ---------------------------------------------------------------------------
def check_graph_break(trace: Trace, names: Names) -> list[Diagnostic]:
    """A value left autograd: a note, or a warning when a backward then missed the leaves before it."""
    found = []
    for cut in find_cuts(trace, names):
        if _only_written(trace, names, cut.op):
            continue  # `p.data -= lr * p.grad`: a write through .data, not a value taken out (see saved-tensor-mutated)
        warn = cut.harmful and cut.fed
        op = cut.op
        results = _cut_result(trace, names, op)
        message = (f"`{op.site.expr or op.site.code}` at line {op.site.line} took "
                   f"{_taken(trace, names, op)} out of the graph: "
                   f"{_how(trace, cut)}.")
        if results:
            message += f" No gradient flows back through {show(results[0])}."
        message += _consequence(trace, names, cut) if warn else _note_tail(trace, names, cut)
        involved = user_names(names.plain(op.inputs[0].tid)[:1], results,
                              _leaf_names(trace, names, cut.lost) if warn else [])
        found.append(Diagnostic("graph-break", "warning" if warn else "note", op.site.line, op.site.code,
                                involved, message))
    return found


def _taken(trace: Trace, names: Names, op: OpEvent) -> str:
    """The value a cut took, as the user wrote it (`out.loss` in `out.loss.item()`), else its name or maker.

    The maker's text would name the call that built the object holding it (`model(ids)`), not the value.
    """
    written = operand_text(op)
    if written and not written.isidentifier():
        return f"`{written}`"
    return value_text(trace, names, op.inputs[0], "a tensor that requires grad")


def _cut_result(trace: Trace, names: Names, op: OpEvent) -> list[str]:
    """The name that holds the cut value: the op's own result, or the line's target if it has no history."""
    own = first_name(names, op.outputs[0], trace) if op.outputs else None
    if own:
        return [own]
    target = assigned_name(op.site.code)
    held = trace.final.get(target) if target else None
    return [target] if target and (held is None or not held.requires_grad) else []


def _only_written(trace: Trace, names: Names, op: OpEvent) -> bool:
    """An unnamed result that is only ever written in place."""
    outs = {o.tid for o in op.outputs}
    if not outs or any(names.plain(t) for t in outs):
        return False
    uses = [u for u in trace.ops if u.seq > op.seq and any(i.tid in outs for i in u.inputs)]
    return bool(uses) and all(u.inplace and u.inputs[0].tid in outs for u in uses)


def _consequence(trace: Trace, names: Names, cut: Cut) -> str:
    backward = next(b for b in succeeded(trace) if b.seq > cut.op.seq)
    lost = describe_names(_leaf_names(trace, names, cut.lost)) or "the leaves before it"
    return (f"\nIts value then went into `{backward.site.expr or backward.site.code}` at line {backward.site.line}, "
            f"but {lost} got no gradient through it: autograd cannot follow values through NumPy or Python numbers.\n"
            f"Fix: compute the loss with torch operations on the tensor itself (`torch.mean`, `torch.exp`, ... "
            f"instead of NumPy or `math`), and convert with `.detach().numpy()` or `.item()` only to log or plot.")


def _note_tail(trace: Trace, names: Names, cut: Cut) -> str:
    if cut.how in _STOP_GRADIENTS and cut.lost and cut.fed:
        lost = describe_names(_leaf_names(trace, names, cut.lost)) or "the leaves before it"
        return (f" The backward that used it sent nothing to {lost}: right for a GAN discriminator step or a "
                f"fixed target; remove the cut if they should train through it.")
    return " Fine for logging, plotting, or values that must not be trained."


def _leaf_names(trace: Trace, names: Names, leaves: tuple[TensorInfo, ...]) -> list[str]:
    return [n for leaf in leaves if (n := leaf_name(trace, names, leaf.tid))]


# -- no-gradient ---------------------------------------------------------------------------
def check_no_gradient(trace: Trace, names: Names) -> list[Diagnostic]:
    """After backward, leaves whose only path to the loss went through Python/NumPy still have no .grad."""
    with_grad = {names.tid_of.get(n) for n in trace.gradients}
    found = []
    for cut in find_cuts(trace, names):
        if not cut.harmful or cut.fed or not cut.fed_by_name:
            continue  # a proven flow is reported as a graph-break warning
        leaves = [n for leaf in cut.lost if leaf.tid not in with_grad and (n := leaf_name(trace, names, leaf.tid))]
        if leaves:
            found.append(_no_gradient(trace, cut, leaves))
    return found


def _no_gradient(trace: Trace, cut: Cut, leaves: list[str]) -> Diagnostic:
    op = cut.op
    backward = next(b for b in succeeded(trace) if b.seq > op.seq)
    several = len(leaves) > 1
    return Diagnostic(
        "no-gradient", "warning", op.site.line, op.site.code, user_names(leaves),
        f"After `{backward.site.expr or backward.site.code}` at line {backward.site.line}, {describe_grads(leaves)} "
        f"{'are' if several else 'is'} still None: the value computed from {describe_names(leaves)} left autograd "
        f"at line {op.site.line} (`{op.site.expr or op.site.code}`: {_how(trace, cut)}), and what was backwarded was "
        f"rebuilt from plain numbers, with no link back.\n"
        f"Fix: keep the loss a torch computation (torch ops on `{op.site.expr.rsplit('.', 1)[0] or 'the tensor'}`, "
        f"no `.item()`/`.numpy()`/`torch.tensor(...)` on the way); convert only to log or plot.")
