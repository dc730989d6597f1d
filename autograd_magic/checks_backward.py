"""Checks on backward calls: no grad_fn, twice, non-scalar, accumulation, missing gradients."""

from __future__ import annotations

import re

from .events import BackwardEvent, OpEvent, Trace
from .graphmodel import CUT_FUNCS
from .lineage import downstream, label, leaves_upstream, upstream
from .naming import Names
from .report import Diagnostic

_NO_GRAD_FN = re.compile(r"does not require grad and does not have a grad_fn", re.I)
_TWICE = re.compile(r"backward through the graph a second time|saved tensors after they have already been freed", re.I)
_NON_SCALAR = re.compile(r"grad can be implicitly created only for scalar outputs", re.I)


def _failed(trace: Trace, pattern: re.Pattern[str]) -> list[BackwardEvent]:
    return [b for b in trace.backwards if b.error and pattern.search(b.error)]


def check_backward_no_grad_fn(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for event in _failed(trace, _NO_GRAD_FN):
        root = label(names, event.root, "the tensor")
        found.append(Diagnostic("backward-no-grad-fn", "error", event.site.line, event.site.code,
                                _involved(names, event, trace), _no_grad_fn_message(trace, names, event, root)))
    return found


def _involved(names: Names, event: BackwardEvent, trace: Trace) -> tuple[str, ...]:
    out = [label(names, event.root, "")] if event.root else []
    for op in upstream(trace, event.root.tid) if event.root else []:
        out += [label(names, i, "") for i in op.inputs[:1]]
    return tuple(dict.fromkeys(n for n in out if n))


def _no_grad_fn_message(trace: Trace, names: Names, event: BackwardEvent, root: str) -> str:
    head = f"`{root}.backward()` failed: `{root}` has no grad_fn, so there is no graph to go back through."
    chain = upstream(trace, event.root.tid) if event.root else []
    cut_at = next((i for i, op in enumerate(chain) if CUT_FUNCS.get(op.func) and op.inputs and op.inputs[0].requires_grad), None)
    if cut_at is None:
        cut_at = next((i for i, op in enumerate(chain) if not op.grad_enabled), None)
    if cut_at is not None:
        steps = list(reversed(chain[: cut_at + 1]))
        lines = [f"How `{root}` lost its history:"]
        for number, op in enumerate(steps, 1):
            lines.append(f"  {number}. line {op.site.line}: {_step_story(op, names)}")
        made = chain[0]
        lines.append(f"So `{root}`, rebuilt at line {made.site.line} (`{made.site.code}`), is a new leaf with no history.")
        fix = ("Fix: keep the computation in torch so it stays in the graph (use the tensor from before `.detach()`/"
               "`.numpy()`), and call `.backward()` on that; convert to NumPy only after backward.")
        return "\n".join([head, *lines, fix])
    if event.root is not None and event.root.is_leaf:
        return head + (f"\n`{root}` is a leaf created without `requires_grad=True` (and not computed from any tensor "
                       f"that requires grad).\nFix: create the inputs with `requires_grad=True`, e.g. "
                       f"`torch.tensor([...], requires_grad=True)`, or set `x.requires_grad_()` before computing.")
    return head + "\nFix: make sure it is computed from a tensor created with `requires_grad=True`, outside `torch.no_grad()`."


_STEP = {
    "detach": "`{expr}` took `{src}`{fn} out of the graph (same values, no history)",
    "numpy": "`{expr}` turned `{src}` into a NumPy array, which autograd cannot see",
    "item": "`{expr}` turned `{src}` into a plain Python number",
    "tolist": "`{expr}` turned `{src}` into plain Python numbers",
    "data.__get__": "`{expr}` took the values of `{src}` without history",
    "tensor": "`{expr}` copied `{src}` into a brand-new tensor with no history",
    "as_tensor": "`{expr}` made a tensor from `{src}` with no history",
}


def _step_story(op: OpEvent, names: Names) -> str:
    src = label(names, op.inputs[0], "it") if op.inputs else "it"
    if op.inputs and op.inputs[0].kind == "ndarray" and src == "it":
        src = "that array"
    fn = f" ({op.inputs[0].grad_fn})" if op.inputs and op.inputs[0].grad_fn else ""
    template = _STEP.get(op.func)
    if template is None:
        where = " under `torch.no_grad()`" if not op.grad_enabled else ""
        return f"`{op.site.expr or op.func}` computed a new value from `{src}`{where}"
    return template.format(expr=op.site.expr or op.func, src=src, fn=fn)


def check_backward_twice(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for event in _failed(trace, _TWICE):
        root = label(names, event.root, "the result")
        earlier = _earlier_backward(trace, event)
        where = (f"the backward at line {earlier.site.line} (`{earlier.site.code}`)" if earlier
                 else "an earlier backward (in a previous cell, or an earlier loop iteration)")
        found.append(Diagnostic(
            "backward-twice", "error", event.site.line, event.site.code, (root,),
            f"`{event.site.expr or event.site.code}` tried to go back through a graph that {where} already used: "
            f"backward frees the tensors the graph saved, so it can run only once per forward pass.\n"
            f"Fix: pass `retain_graph=True` to the first backward if you really need two passes, or recompute "
            f"the forward (rebuild `{root}`) before calling backward again."))
    found.extend(_silent_second_backward(trace, names))
    return found


def _earlier_backward(trace: Trace, event: BackwardEvent) -> BackwardEvent | None:
    nodes = {n.nid for n in event.graph.nodes} if event.graph else set()
    for other in trace.backwards:
        if other.seq >= event.seq or other.error:
            continue
        other_nodes = {n.nid for n in other.graph.nodes} if other.graph else set()
        if (event.root and other.root and other.root.tid == event.root.tid) or nodes & other_nodes:
            return other
    return None


def _silent_second_backward(trace: Trace, names: Names) -> list[Diagnostic]:
    """A second backward that succeeded (nothing was saved): .grad silently doubled."""
    found = []
    for event in trace.backwards:
        earlier = _earlier_backward(trace, event) if not event.error and event.func == "backward" else None
        if earlier is None or earlier.retain_graph or earlier.site.line == event.site.line:
            continue
        leaves = [names.label(g.tid) or "a leaf" for g in event.leaf_grads]
        found.append(Diagnostic(
            "backward-twice", "warning", event.site.line, event.site.code, tuple([label(names, event.root)] + leaves),
            f"This is the second backward through the same graph (the first was at line {earlier.site.line}). It ran "
            f"only because nothing in the graph needed saved tensors, and it added the same gradients again: "
            f"{', '.join(f'`{n}.grad`' for n in leaves) or '.grad'} now holds twice the gradient.\n"
            f"Fix: call backward once, or zero the gradients (`x.grad = None`) in between."))
    return found


def check_backward_non_scalar(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for event in _failed(trace, _NON_SCALAR):
        root = label(names, event.root, "y")
        shape = tuple(event.root.shape) if event.root else ()
        found.append(Diagnostic(
            "backward-non-scalar", "error", event.site.line, event.site.code, (root,),
            f"`{root}` has shape {shape}, not a single number, so backward does not know how to weigh its elements.\n"
            f"Fix, either:\n"
            f"  `{root}.sum().backward()`  - gradient of the sum of all elements (usual for a loss you forgot to reduce)\n"
            f"  `{root}.backward(torch.ones_like({root}))`  - the same gradients, passing the weight of each element "
            f"explicitly (use other weights for a vector-Jacobian product)."))
    return found


def check_grad_accumulated(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for event in trace.backwards:
        repeated = [g for g in event.leaf_grads if g.repeated_site]
        if not repeated or event.error:
            continue
        leaves = tuple(names.label(g.tid) or "a leaf" for g in repeated)
        shown = ", ".join(f"`{n}.grad`" for n in leaves[:4]) + (" ..." if len(leaves) > 4 else "")
        found.append(Diagnostic(
            "grad-accumulated", "warning", event.site.line, event.site.code, leaves,
            f"{shown} already held a gradient from an earlier run of this same backward, and backward adds to "
            f".grad rather than replacing it, so the gradients now sum several passes.\n"
            f"Fix: zero them before each backward: `optimizer.zero_grad()` (or `model.zero_grad()`, or `x.grad = None`)."))
    return found


def check_no_gradient(trace: Trace, names: Names) -> list[Diagnostic]:
    """After backward, a leaf upstream of a cut value still has no .grad."""
    if not any(b.error is None for b in trace.backwards):
        return []
    found = []
    reached = {n.tid for b in trace.backwards if b.graph for n in b.graph.nodes if n.label == "AccumulateGrad"}
    have_grad = {names.tid_of.get(n) for n in trace.gradients}
    roots = {b.root.tid for b in trace.backwards if b.root is not None and b.error is None}
    for op in trace.ops:
        if not CUT_FUNCS.get(op.func) or not op.inputs or not op.inputs[0].requires_grad or not op.outputs:
            continue
        if not downstream(trace, op.outputs[0].tid, op.seq) & roots:
            continue
        first = op.inputs[0]
        leaves = leaves_upstream(trace, first.tid) + ([first] if first.is_leaf else [])
        for leaf in leaves:
            if leaf.tid in reached or leaf.tid in have_grad:
                continue
            name = label(names, leaf)
            found.append(Diagnostic(
                "no-gradient", "warning", op.site.line, op.site.code, (name,),
                f"After backward, `{name}.grad` is still None: the only path from `{name}` to what was backwarded goes "
                f"through `{op.site.expr or op.func}` at line {op.site.line}, which cut the graph.\n"
                f"Fix: compute the loss from the tensor itself, without `.detach()`/`.item()`/`.numpy()` on the way."))
    return found


def check_saved_tensor_mutated(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for event in trace.backwards:
        for nid, saved in event.stale_saved:
            node = next((n for n in event.graph.nodes if n.nid == nid), None) if event.graph else None
            if node is None:
                continue
            writer = _silent_writer(trace, event)
            where = f" at line {node.site.line} (`{node.site.code}`)" if node.site and node.site.line else ""
            by = (f" It was changed by `{writer.site.expr or writer.site.code}` at line {writer.site.line}."
                  if writer else " It was changed through a NumPy array or `.data`, which autograd cannot see.")
            involved = tuple(n for n in (names.label(node.tid), label(names, writer.inputs[0], "") if writer else "") if n)
            found.append(Diagnostic(
                "saved-tensor-mutated", "warning", writer.site.line if writer else event.site.line,
                writer.site.code if writer else event.site.code, involved,
                f"{node.label}{where} saved `{saved}` for backward, and its values changed afterwards without "
                f"autograd noticing.{by} Writes through `.numpy()` arrays or `.data` do not bump the version "
                f"counter, so backward at line {event.site.line} used the new values and the gradients are silently "
                f"wrong.\nFix: modify a copy (`.clone()`), or make the change under `torch.no_grad()` on the tensor "
                f"itself (which autograd tracks)."))
    return found


def _silent_writer(trace: Trace, event: BackwardEvent) -> OpEvent | None:
    """The last in-place op on a `.data` alias before this backward."""
    data_tids = {o.tid for op in trace.ops if op.func == "data.__get__" for o in op.outputs}
    writers = [op for op in trace.ops if op.seq < event.seq and op.inplace and op.inputs and op.inputs[0].tid in data_tids]
    return writers[-1] if writers else None
