"""backward-no-grad-fn: backward on a tensor with no history, traced back to where the history was lost.

The path is read off this cell's ops, or off the chain an earlier recorded cell
left in `Trace.provenance` (the seed tutorial rebuilds ``b`` in one cell and
calls ``b.backward()`` in the next).
"""

from __future__ import annotations

import ast

from ...report.model import Diagnostic
from ...trace.events import OpEvent, Site, TensorInfo, Trace
from ..lineage import (
    base_name,
    failed_backwards,
    leaf_name,
    leaves_upstream,
    producer,
    root_text,
    show,
    user_names,
    value_text,
    where,
)
from ..naming import Names
from ..patterns import NO_GRAD_FN
from ..source import assigned_name, grad_context, tainted_names

_STEPS = {
    "detach": "{expr} took {src} out of the graph (same values, no history)",
    "detach_": "{expr} took {src} out of the graph in place",
    "data.__get__": "{expr} took the values of {src} without history",
    "numpy": "{expr} turned {src} into a NumPy array, which autograd cannot see",
    "item": "{expr} turned {src} into a plain Python number",
    "tolist": "{expr} turned {src} into plain Python numbers",
    "tensor": "{expr} copied {src} into a brand-new tensor with no history",
    "as_tensor": "{expr} made a tensor from {src} with no history",
}


def check_backward_no_grad_fn(trace: Trace, names: Names) -> list[Diagnostic]:
    """backward() on a tensor without grad_fn: say where its history was lost."""
    found = []
    for event in failed_backwards(trace, NO_GRAD_FN):
        root = root_text(trace, names, event)
        path, earlier = _history(trace, names, event.root)
        story = _cut_story(trace, names, root, path) if path else _no_cut_story(trace, root, event.root)
        found.append(Diagnostic(
            "backward-no-grad-fn", "error", event.site.line, event.site.code,
            user_names([root], _path_names(trace, names, path), [] if earlier else _lost_leaves(trace, names, path)),
            f"`{event.site.expr or event.site.code}` failed: {show(root)} has no grad_fn, so there is no graph to "
            f"go back through.\n{story}"))
    return found


def _history(trace: Trace, names: Names, root: TensorInfo | None) -> tuple[list[OpEvent], bool]:
    """The ops from the cut to ``root``: by tensor flow, through plain Python names, or from an earlier cell."""
    if root is None:
        return [], False
    path = _path_to_cut(trace, root.tid) or _path_by_name(trace, names, root.tid)
    if path:
        return path, False
    return _earlier_path(trace, root.tid), True


def _path_by_name(trace: Trace, names: Names, root: int) -> list[OpEvent]:
    """`s = y.item(); loss = torch.tensor(s * 3)`: the flow went through Python, follow the assignments."""
    made = producer(trace, root)
    if made is None:
        return []
    targets = {n for n in [assigned_name(made.site.code), *names.plain(root)] if n}
    for cut in reversed([op for op in trace.ops if op.seq < made.seq and is_cut(op)]):
        seeds = {n for n in [assigned_name(cut.site.code), *(m for o in cut.outputs for m in names.plain(o.tid))] if n}
        if cut.site.line == made.site.line or tainted_names(trace.source, seeds) & targets:
            return _forward_from(trace, cut, made)
    return []


def _forward_from(trace: Trace, cut: OpEvent, made: OpEvent) -> list[OpEvent]:
    """The cut, the recorded ops that consumed its value, and the op that made the root."""
    path, values = [cut], {o.tid for o in cut.outputs}
    for op in trace.ops:
        if cut.seq < op.seq < made.seq and any(i.tid in values for i in op.inputs):
            path.append(op)
            values.update(o.tid for o in op.outputs)
    return path + [made]


def is_cut(op: OpEvent) -> bool:
    """An op whose input required grad and whose output does not: where history ends."""
    if not op.inputs or not any(i.kind == "tensor" and i.requires_grad for i in op.inputs):
        return False
    outputs_grad = any(o.kind == "tensor" and o.requires_grad for o in op.outputs)
    return not outputs_grad and (op.func in _STEPS or not op.grad_enabled)


def _path_to_cut(trace: Trace, root: int, limit: int = 200) -> list[OpEvent]:
    """Ops from the nearest cut in ``root``'s ancestry (breadth first) down to ``root``, in execution order."""
    parent: dict[int, OpEvent] = {}  # op seq -> the op that consumed its output on the way to root
    queue = [producer(trace, root)]
    seen: set[int] = set()
    while queue and len(seen) < limit:
        op = queue.pop(0)
        if op is None or op.seq in seen:
            continue
        seen.add(op.seq)
        if is_cut(op):
            path = [op]
            while path[-1].seq in parent:
                path.append(parent[path[-1].seq])
            return path
        for info in op.inputs:
            made = producer(trace, info.tid, before=op.seq)
            if made is not None and made.seq not in seen:
                parent.setdefault(made.seq, op)
                queue.append(made)
    return []


def _earlier_path(trace: Trace, tid: int) -> list[OpEvent]:
    """The same, from the chain an earlier cell recorded for this tensor (nearest first)."""
    chain = trace.provenance.get(tid, ())
    cut = next((i for i, op in enumerate(chain) if is_cut(op)), None)
    return [] if cut is None else list(reversed(chain[: cut + 1]))


def _at(site: Site) -> str:
    return where(site)


def _source(trace: Trace, names: Names, op: OpEvent) -> str:
    info = op.inputs[0] if op.inputs else None
    if info is None:
        return _first_argument(op) or "its input"
    if op.site.cell is None:
        text = value_text(trace, names, info, "its input")
    else:  # ids of an earlier cell: name the input by the assignment that made it there
        chain = next((c for c in trace.provenance.values() if op in c), ())
        made = next((p for p in chain if any(o.tid == info.tid for o in p.outputs)), None)
        text = f"`{made.target or made.site.expr}`" if made is not None else _receiver(op) or "its input"
    if not info.grad_fn:
        return text
    return text[:-1] + f", grad_fn {info.grad_fn})" if text.endswith(")") else text + f" (grad_fn {info.grad_fn})"


def _first_argument(op: OpEvent) -> str | None:
    """`m` for `torch.tensor(m)`: what a call was given, as written (numbers are not recorded)."""
    try:
        call = ast.parse(op.site.expr or "", mode="eval").body
    except SyntaxError:
        return None
    if isinstance(call, ast.Call) and call.args:
        return f"`{ast.unparse(call.args[0])}`"
    return None


def _receiver(op: OpEvent) -> str | None:
    """`b` for `b.detach()`: the value a method was called on, as written."""
    expr = op.site.expr
    name = op.func.removesuffix(".__get__")
    head, dot, tail = expr.rpartition(f".{name}")
    return f"`{head}`" if dot and head and (not tail or tail.startswith("(")) else None


def _step(trace: Trace, names: Names, op: OpEvent) -> str:
    src = _source(trace, names, op)
    expr = f"`{op.site.expr or op.func}`"
    template = _STEPS.get(op.func)
    if template is not None:
        return template.format(expr=expr, src=src)
    block = grad_context(trace.source, op.site.line) if op.site.cell is None else "torch.no_grad()"
    where = f" under `{block}`, so nothing was recorded" if not op.grad_enabled else ""
    return f"{expr} computed a new value from {src}{where}"


def _cut_story(trace: Trace, names: Names, root: str, path: list[OpEvent]) -> str:
    lines = [f"How {show(root)} lost its history:"]
    lines += [f"  {n}. {_at(op.site)}: {_step(trace, names, op)}" for n, op in enumerate(path, 1)]
    made = path[-1]
    lines.append(f"So {show(root)}, rebuilt at {_at(made.site)} (`{made.site.code}`), is a new tensor with no "
                 f"history: nothing connects it to the leaves it was first computed from.")
    lines.append(_fix(trace, names, root, path[0]))
    return "\n".join(lines)


def _fix(trace: Trace, names: Names, root: str, cut: OpEvent) -> str:
    base = base_name(root)
    source = cut.inputs[0] if cut.inputs else None
    if _source_name(trace, names, cut) == base and source is not None:  # `b = torch.tensor(b.detach().numpy())`
        many = _numel(source.shape) > 1
        reduce = f" (`{base}.sum().backward()`: it holds {_numel(source.shape)} numbers)" if many else ""
        return (f"Fix: keep the tensor and its converted copy under different names, e.g. "
                f"`{base}_np = {base}.detach().numpy()`, and call backward on `{base}` itself{reduce}. Convert to "
                f"NumPy or Python numbers only to log or plot.")
    if not cut.grad_enabled and cut.site.cell is None and cut.func not in _STEPS:
        block = grad_context(trace.source, cut.site.line)
        return (f"Fix: compute `{cut.site.expr or cut.func}` outside the `with {block}:` block (that block is for "
                f"values that must not be trained), then call backward.")
    return (f"Fix: call backward on a value computed with torch operations only, not through "
            f"`{cut.site.expr or cut.func}`; convert to NumPy or Python numbers only after backward, to log or plot.")


def _source_name(trace: Trace, names: Names, cut: OpEvent) -> str | None:
    """The variable the cut value was taken from, as the user typed it."""
    if cut.site.cell is None and cut.inputs:
        named = names.plain(cut.inputs[0].tid)
        if named:
            return base_name(named[0])
    receiver = _receiver(cut)
    return receiver.strip("`") if receiver else None


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _path_names(trace: Trace, names: Names, path: list[OpEvent]) -> list[str]:
    out = []
    for op in path:
        if op.site.cell is None and op.inputs:
            out += names.plain(op.inputs[0].tid)[:1]
        elif op.target:
            out.append(op.target)
    return out


def _lost_leaves(trace: Trace, names: Names, path: list[OpEvent]) -> list[str]:
    if not path or not path[0].inputs:
        return []
    first = path[0].inputs[0]
    leaves = leaves_upstream(trace, first.tid) + ([first] if first.is_leaf else [])
    return [n for leaf in leaves if (n := leaf_name(trace, names, leaf.tid))]


def _no_cut_story(trace: Trace, root: str, info: TensorInfo | None) -> str:
    made = producer(trace, info.tid) if info is not None else None
    if info is not None and made is None and any(i.tid == info.tid for i in trace.previous.values()):
        return (f"{show(root)} already had no grad_fn when this cell started: it was made in an earlier cell "
                f"(look there for `.detach()`, `.numpy()`, `.item()`, `torch.tensor(...)` or `torch.no_grad()`).\n"
                f"Fix: rebuild {show(root)} from tensors that require grad, with torch operations only, and call "
                f"backward on that.")
    where = f" at line {made.site.line} (`{made.site.code}`)" if made is not None else ""
    return (f"{show(root)}{where} was computed only from tensors that do not require grad (and it is not a leaf "
            f"that requires grad), so autograd recorded nothing.\n"
            f"Fix: create the inputs you want gradients for with `requires_grad=True`, e.g. "
            f"`w = torch.randn(3, requires_grad=True)`, or call `w.requires_grad_()` before computing with them.")
