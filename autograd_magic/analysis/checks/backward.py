"""Checks on backward calls that failed or ran twice: no grad_fn, twice, non-scalar."""

from __future__ import annotations

from ...report.model import Diagnostic
from ...trace.events import BackwardEvent, Trace
from ..lineage import (
    base_name,
    describe_grads,
    failed_backwards,
    leaf_name,
    root_text,
    show,
    user_names,
)
from ..naming import Names
from ..patterns import NON_SCALAR, TWICE


# -- backward-twice ------------------------------------------------------------------------
def check_backward_twice(trace: Trace, names: Names) -> list[Diagnostic]:
    """A second backward through a graph: an error when it was freed, a warning when .grad silently doubled."""
    found = []
    for event in failed_backwards(trace, TWICE):
        root = root_text(trace, names, event)
        earlier = _earlier_backward(trace, event)
        carried = _carried(trace, names, event, earlier)
        fix = (f"Fix: `{carried} = {carried}.detach()` after each backward: {show(carried)} is carried from one "
               f"iteration to the next and still holds the graph of the iteration before, which backward already "
               f"freed. (`retain_graph=True` would make every step go back through all earlier ones.)"
               if carried else
               f"Fix: recompute the forward (rebuild {show(root)}) before calling backward again, or pass "
               f"`retain_graph=True` to the first backward if you really need two passes.")
        found.append(Diagnostic(
            "backward-twice", "error", event.site.line, event.site.code, user_names([root], [carried or ""]),
            f"`{event.site.expr or event.site.code}` tried to go back through a graph that "
            f"{_where(event, earlier)} already used: backward frees the values the graph saved, so it can run only "
            f"once per forward pass.\n{fix}"))
    found.extend(_silent_second_backward(trace, names))
    return found


def _carried(trace: Trace, names: Names, event: BackwardEvent, earlier: BackwardEvent | None) -> str | None:
    """The named value whose graph two different losses share: an RNN state not detached between steps."""
    if earlier is None or earlier.root is None or event.root is None or earlier.root.tid == event.root.tid:
        return None
    shared = _op_nodes(event) & _op_nodes(earlier)
    for node in event.graph.nodes if event.graph else ():
        named = names.plain(node.tid) if node.nid in shared else []
        if named:
            return base_name(named[0])
    # a module call (`h = cell(x, h)`) binds no name to its internal ops: the statement's target does
    stored = (op.target for op in trace.ops if op.target and any(o.node in shared for o in op.outputs))
    return next(stored, None)


def _where(event: BackwardEvent, earlier: BackwardEvent | None) -> str:
    if earlier is None:
        return "an earlier backward (in a previous cell, or an earlier run of this loop)"
    if earlier.site.line == event.site.line:
        return f"the same line, in an earlier iteration of the loop (line {earlier.site.line}),"
    return f"the backward at line {earlier.site.line} (`{earlier.site.code}`)"


def _op_nodes(event: BackwardEvent) -> set[int]:
    return {n.nid for n in event.graph.nodes if n.label != "AccumulateGrad"} if event.graph else set()


def _earlier_backward(trace: Trace, event: BackwardEvent) -> BackwardEvent | None:
    """The latest successful backward before ``event`` with the same root or a shared (non-leaf) node."""
    nodes = _op_nodes(event)
    found = None
    for other in trace.backwards:
        if other.seq >= event.seq or other.error:
            continue
        same_root = event.root is not None and other.root is not None and other.root.tid == event.root.tid
        if same_root or nodes & _op_nodes(other):
            found = other
    return found


def _silent_second_backward(trace: Trace, names: Names) -> list[Diagnostic]:
    """Backward twice on the same tensor that succeeded (nothing was saved): .grad silently doubled."""
    found = []
    for event in trace.backwards:
        if event.error or event.func != "backward" or event.root is None:
            continue
        earlier = next((o for o in trace.backwards if o.seq < event.seq and not o.error and o.func == "backward"
                        and o.root is not None and o.root.tid == event.root.tid), None)
        doubled = [g for g in event.leaf_grads if g.had_grad]
        if earlier is None or earlier.retain_graph or not doubled:
            continue
        root = root_text(trace, names, event)
        leaves = [leaf_name(trace, names, g.tid) or "a leaf" for g in doubled]
        found.append(Diagnostic(
            "backward-twice", "warning", event.site.line, event.site.code, user_names([root], leaves),
            f"This is the second backward from {show(root)} (the first was at line {earlier.site.line}). It ran "
            f"only because nothing in the graph needed saved values, and it added the same gradients again: "
            f"{describe_grads(leaves)} now {'holds' if len(leaves) == 1 else 'hold'} the sum of both passes.\n"
            f"Fix: call backward once per forward pass; if you meant to start over, zero the gradients first "
            f"(`{base_name(leaves[0])}.grad = None` or `optimizer.zero_grad()`)."))
    return found


# -- backward-non-scalar -------------------------------------------------------------------------
def check_backward_non_scalar(trace: Trace, names: Names) -> list[Diagnostic]:
    """backward() without a gradient on a tensor with more than one element."""
    found = []
    for event in failed_backwards(trace, NON_SCALAR):
        root = root_text(trace, names, event)
        shape = list(event.root.shape) if event.root else []
        count = 1
        for size in shape:
            count *= size
        found.append(Diagnostic(
            "backward-non-scalar", "error", event.site.line, event.site.code, user_names([root]),
            f"{show(root)} has shape {shape} ({count} numbers), not a single number, so backward does not know "
            f"how to weigh its elements: backward needs a scalar loss, or a gradient for each element.\n"
            f"Fix, either:\n"
            f"  `{root}.sum().backward()`  - the gradient of the sum of all elements (usual when you forgot to "
            f"reduce a loss; `.mean()` also works and scales it by 1/{count})\n"
            f"  `{root}.backward(torch.ones_like({root}))`  - the same gradients, giving each element's weight "
            f"explicitly (other weights compute a vector-Jacobian product)."))
    return found
