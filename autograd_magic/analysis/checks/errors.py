"""Checks for calls that raised: explain PyTorch's error at the line and names involved.

Only an error that ended the cell is explained (one the cell caught is its own
business). PyTorch's wording changes between versions, so it is matched loosely.
"""

from __future__ import annotations

import re

from ...report.model import Diagnostic
from ...trace.events import OpEvent, Trace
from ...trace.names import identifiers
from ..lineage import base_name, failed_backwards, first_name, producer, raised_text, show, user_names
from ..naming import Names
from ..patterns import INT_GRAD, LEAF_INPLACE, LEAF_INTERIOR, NONLEAF_FLAG, NUMPY_GRAD
from ..source import assigned_name, user_called, written_name


def _raised(trace: Trace, pattern: re.Pattern[str]) -> list[OpEvent]:
    raised = raised_text(trace)
    return [op for op in trace.ops if op.error and op.error == raised and pattern.search(op.error)]


def _name(trace: Trace, names: Names, op: OpEvent, fallback: str = "the tensor") -> str:
    return first_name(names, op.inputs[0] if op.inputs else None, trace) or written_name(op.site) or fallback


# -- leaf-inplace -------------------------------------------------------------------------
def check_leaf_inplace(trace: Trace, names: Names) -> list[Diagnostic]:
    """In-place change of a leaf that requires grad, of a view of one, or of a leaf a graph already used."""
    found = []
    for op in _raised(trace, LEAF_INPLACE):
        view = _viewed_leaf(trace, names, op) if "view of a leaf" in (op.error or "") else None
        found.append(_leaf_view_diagnostic(trace, names, op, *view) if view else _leaf_diagnostic(trace, names, op))
    found.extend(_moved_into_interior(trace, names))
    return found


def _leaf_diagnostic(trace: Trace, names: Names, op: OpEvent) -> Diagnostic:
    name = _name(trace, names, op)
    return Diagnostic(
        "leaf-inplace", "error", op.site.line, op.site.code, user_names([name]),
        f"`{op.site.expr or op.site.code}` changes {show(name)} in place, but {show(name)} is a leaf that "
        f"requires grad: autograd would lose the value the gradient is computed from.\n"
        f"Fix: for a parameter update or an initialisation, tell autograd not to record it:\n"
        f"    with torch.no_grad():\n        {op.site.code}\n"
        f"Otherwise compute a new tensor (`{name} = {name} + ...`) or change a copy (`{name}.clone()`).")


def _viewed_leaf(trace: Trace, names: Names, op: OpEvent) -> tuple[str, OpEvent] | None:
    """The leaf the written view looks at, and the op that made the view."""
    made = producer(trace, op.inputs[0].tid) if op.inputs else None
    if made is None or not made.inputs:
        return None
    leaf = first_name(names, made.inputs[0], trace)
    return None if leaf is None else (leaf, made)


def _leaf_view_diagnostic(trace: Trace, names: Names, op: OpEvent, leaf: str, made: OpEvent) -> Diagnostic:
    view = _name(trace, names, op, made.target or "the view")
    copy = f"`{made.site.code.split('=')[0].strip()} = {made.site.expr}.clone()`" if made.site.expr else "`.clone()`"
    return Diagnostic(
        "leaf-inplace", "error", op.site.line, op.site.code, user_names([view, leaf]),
        f"`{op.site.expr or op.site.code}` changes {show(view)} in place, and {show(view)} is a view of "
        f"{show(leaf)} (made at line {made.site.line}: `{made.site.code}`), a leaf that requires grad: writing "
        f"through the view changes the leaf, and autograd would lose the value the gradient is computed from.\n"
        f"Fix: for an initialisation or an update, tell autograd not to record it:\n"
        f"    with torch.no_grad():\n        {op.site.code}\n"
        f"To change a copy instead, make one where the view was taken: {copy}.")


def _moved_into_interior(trace: Trace, names: Names) -> list[Diagnostic]:
    """A leaf a graph used was later made a computed tensor by an in-place write: backward cannot reach it."""
    found = []
    for event in failed_backwards(trace, LEAF_INTERIOR):
        write = next((op for op in trace.ops if op.seq < event.seq and _made_interior(trace, op)), None)
        if write is None:
            continue
        name = _name(trace, names, write)
        found.append(Diagnostic(
            "leaf-inplace", "error", event.site.line, event.site.code, user_names([name]),
            f"`{event.site.code}` at line {event.site.line} needs {show(name)} to still be the leaf the graph was "
            f"built from, but `{write.site.expr or write.site.code}` at line {write.site.line} wrote a value that "
            f"requires grad into it in place, which made it a computed tensor: the leaf \"has been moved into the "
            f"graph interior\".\n"
            f"Fix: keep the leaf unchanged until backward has run: compute a new tensor "
            f"(`{name}_new = {name} * ...`), or make the update under `with torch.no_grad():` after backward."))
    return found


def _made_interior(trace: Trace, op: OpEvent) -> bool:
    """An in-place write that turned a leaf into a computed tensor (ops are described after they ran)."""
    if not op.inplace or op.error or not op.inputs or op.inputs[0].is_leaf:
        return False
    tid = op.inputs[0].tid
    return any(i.tid == tid and i.is_leaf for early in trace.ops if early.seq < op.seq for i in early.inputs)


# -- requires-grad-int ----------------------------------------------------------------------
def check_requires_grad_int(trace: Trace, names: Names) -> list[Diagnostic]:
    """requires_grad on an integer (or bool) tensor."""
    found = []
    for op in _raised(trace, INT_GRAD):
        name = first_name(names, op.inputs[0] if op.inputs else None, trace) or op.target or assigned_name(op.site.code)
        name = name or written_name(op.site) or "the tensor"
        dtype = f" ({op.inputs[0].dtype})" if op.inputs and op.inputs[0].dtype else ""
        found.append(Diagnostic(
            "requires-grad-int", "error", op.site.line, op.site.code, user_names([name]),
            f"{show(name)} would be an integer tensor{dtype}, and only floating-point or complex tensors can "
            f"require grad: a gradient needs values that can change by small amounts.\n"
            f"Fix: {_int_fix(op, base_name(name))}"))
    return found


_FLOAT_LITERAL = {"tensor": "write the numbers as floats (`[1., 2.]`) or pass `dtype=torch.float32`",
                  "arange": "give a float bound (`torch.arange(3.)`) or pass `dtype=torch.float32`",
                  "as_tensor": "pass `dtype=torch.float32`, or make the data floats"}


def _int_fix(op: OpEvent, name: str) -> str:
    """The fix for the road taken: the constructor's arguments, or a conversion before the flag."""
    if op.func in ("requires_grad_", "requires_grad.__set__"):
        return f"convert it to floats first: `{name} = {name}.float().requires_grad_()`."
    how = _FLOAT_LITERAL.get(op.func, "pass a floating-point dtype (`dtype=torch.float32`)")
    return f"make it a float tensor where it is created: {how}."


# -- numpy-requires-grad ----------------------------------------------------------------------
def check_numpy_requires_grad(trace: Trace, names: Names) -> list[Diagnostic]:
    """.numpy() on a tensor that requires grad."""
    found = []
    for op in _raised(trace, NUMPY_GRAD):
        name = _name(trace, names, op)
        base = base_name(name)
        found.append(Diagnostic(
            "numpy-requires-grad", "error", op.site.line, op.site.code, user_names([name]),
            f"{show(name)} requires grad, and a NumPy array cannot carry autograd history, so `.numpy()` refuses "
            f"rather than silently dropping it.\n"
            f"Fix: `{base}.detach().numpy()` - the array then shares memory with {show(name)} (changing one changes "
            f"the other) and nothing computed from it gets gradients; add `.copy()` for an independent array "
            f"(`{base}.detach().cpu().numpy().copy()` also works for GPU tensors)."))
    return found


# -- requires-grad-nonleaf ----------------------------------------------------------------------
def check_requires_grad_nonleaf(trace: Trace, names: Names) -> list[Diagnostic]:
    """Changing requires_grad on a computed tensor: an error for False, a silent no-op for True."""
    found = []
    for op in _raised(trace, NONLEAF_FLAG):
        name = _name(trace, names, op)
        base = base_name(name)
        found.append(Diagnostic(
            "requires-grad-nonleaf", "error", op.site.line, op.site.code, user_names([name]),
            f"{show(name)} is not a leaf (it was computed from tensors that require grad), so its requires_grad "
            f"flag follows from its inputs and cannot be switched off.\n"
            f"Fix: to stop gradients here use `{base} = {base}.detach()`; to make it a new trainable leaf use "
            f"`{base} = {base}.detach().requires_grad_()`."))
    found.extend(_nonleaf_switched_on(names, trace))
    return found


def _nonleaf_switched_on(names: Names, trace: Trace) -> list[Diagnostic]:
    found = []
    for op in trace.ops:
        if op.error or op.func not in ("requires_grad_", "requires_grad.__set__") or not op.inputs:
            continue
        if op.inputs[0].is_leaf or op.args[:1] == ("False",) or not user_called(op, "requires_grad"):
            continue
        name = _name(trace, names, op)
        base = base_name(name)
        found.append(Diagnostic(
            "requires-grad-nonleaf", "warning", op.site.line, op.site.code, user_names([name]),
            f"`{op.site.expr or op.site.code}` does nothing: {show(name)} is not a leaf, it already requires grad "
            f"through the tensors it was computed from, and it will not get a `.grad` either.\n"
            f"Fix: to keep its gradient call `{base}.retain_grad()` before backward; to make it a trainable leaf "
            f"of its own use `{base} = {base}.detach().requires_grad_()`; or set requires_grad on the leaves."))
    return found


# -- exception ------------------------------------------------------------------------------------
def check_exception(trace: Trace, names: Names) -> list[Diagnostic]:
    """Any exception the cell raised; dropped by `analyze` when a specific check explains it."""
    error = trace.error
    if error is None:
        return []
    words = identifiers(error.site.code)
    involved = user_names(n for n in trace.final if n in words and n not in names.qualified)
    where = f" at line {error.site.line}" if error.site.line else ""
    return [Diagnostic("exception", "error", error.site.line, error.site.code, involved,
                       f"The cell raised {error.type}{where}: {error.message}\n"
                       f"The report shows what ran before it; the traceback below points at the same line.")]
