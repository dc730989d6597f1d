"""Checks for calls that raised: explain PyTorch's error at the line and names involved.

Only an error that ended the cell is explained (one the cell caught is its own
business). PyTorch's wording changes between versions, so it is matched loosely.
"""

from __future__ import annotations

import re

from ...report.model import Diagnostic
from ...trace.events import OpEvent, Trace
from ...trace.names import identifiers
from ..lineage import base_name, first_name, raised_text, show, user_names
from ..naming import Names
from ..patterns import INT_GRAD, LEAF_INPLACE, NONLEAF_FLAG, NUMPY_GRAD
from ..source import assigned_name, user_called, written_name


def _raised(trace: Trace, pattern: re.Pattern[str]) -> list[OpEvent]:
    raised = raised_text(trace)
    return [op for op in trace.ops if op.error and op.error == raised and pattern.search(op.error)]


def _name(trace: Trace, names: Names, op: OpEvent, fallback: str = "the tensor") -> str:
    return first_name(names, op.inputs[0] if op.inputs else None, trace) or written_name(op.site) or fallback


# -- leaf-inplace -------------------------------------------------------------------------
def check_leaf_inplace(trace: Trace, names: Names) -> list[Diagnostic]:
    """In-place change of a leaf that requires grad (or of a view of one)."""
    found = []
    for op in _raised(trace, LEAF_INPLACE):
        name = _name(trace, names, op)
        view = "a view of " if "view of a leaf" in (op.error or "") else ""
        found.append(Diagnostic(
            "leaf-inplace", "error", op.site.line, op.site.code, user_names([name]),
            f"`{op.site.expr or op.site.code}` changes {view}{show(name)} in place, but {show(name)} is a leaf that "
            f"requires grad: autograd would lose the value the gradient is computed from.\n"
            f"Fix: for a parameter update or an initialisation, tell autograd not to record it:\n"
            f"    with torch.no_grad():\n        {op.site.code}\n"
            f"Otherwise compute a new tensor (`{name} = {name} + ...`) or change a copy (`{name}.clone()`)."))
    return found


# -- requires-grad-int ----------------------------------------------------------------------
def check_requires_grad_int(trace: Trace, names: Names) -> list[Diagnostic]:
    """requires_grad on an integer (or bool) tensor."""
    found = []
    for op in _raised(trace, INT_GRAD):
        name = first_name(names, op.inputs[0] if op.inputs else None, trace) or op.target or assigned_name(op.site.code)
        name = name or written_name(op.site) or "the tensor"
        dtype = op.inputs[0].dtype if op.inputs else "int64: whole numbers like `[1, 2]` make an integer tensor"
        found.append(Diagnostic(
            "requires-grad-int", "error", op.site.line, op.site.code, user_names([name]),
            f"{show(name)} would be an integer tensor ({dtype}), and only floating-point or complex tensors can "
            f"require grad: a gradient needs values that can change by small amounts.\n"
            f"Fix: make it a float tensor: write the numbers as floats (`[1., 2.]`), pass `dtype=torch.float32`, "
            f"or convert first: `{base_name(name)} = {base_name(name)}.float().requires_grad_()`."))
    return found


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
