"""Checks for calls that raised: explain PyTorch's error at the line and names involved.

PyTorch's wording changes between versions, so messages are matched loosely.
"""

from __future__ import annotations

import re

from .events import OpEvent, Trace
from .lineage import label, written_name
from .naming import Names
from .report import Diagnostic

_LEAF_INPLACE = re.compile(r"leaf Variable that requires grad is being used in an in-place operation", re.I)
_INT_GRAD = re.compile(r"floating point and complex dtype can require gradients", re.I)
_NUMPY_GRAD = re.compile(r"numpy\(\) on Tensor that requires grad", re.I)
_NONLEAF_FLAG = re.compile(r"only change requires_grad flags of leaf variables", re.I)
_INPLACE_SAVED = re.compile(r"modified by an inplace operation", re.I)
_VERSIONS = re.compile(r"is at version (\d+); expected version (\d+)")
_OUTPUT_OF = re.compile(r"output \d+ of (\w+)|(\w+)Backward\d*")


def _raised(trace: Trace, pattern: re.Pattern[str]) -> list[OpEvent]:
    return [op for op in trace.ops if op.error and pattern.search(op.error)]


def _name(names: Names, op: OpEvent, fallback: str = "the tensor") -> str:
    if op.inputs:
        found = names.label(op.inputs[0].tid)
        if found:
            return found
    return written_name(op.site) or op.target or fallback


def check_leaf_inplace(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for op in _raised(trace, _LEAF_INPLACE):
        name = _name(names, op)
        view = "a view of " if "view of a leaf" in (op.error or "") else ""
        found.append(Diagnostic(
            "leaf-inplace", "error", op.site.line, op.site.code, (name,),
            f"`{op.site.expr or op.site.code}` changes {view}`{name}` in place, but `{name}` is a leaf that requires "
            f"grad: autograd needs its original value to compute gradients.\n"
            f"Fix: if this is a parameter update or an initialisation, do it without recording:\n"
            f"  with torch.no_grad():\n      {op.site.code}\n"
            f"Otherwise use an out-of-place op (`{name} = {name} + ...`) or work on `{name}.clone()`."))
    return found


def check_requires_grad_int(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for op in _raised(trace, _INT_GRAD):
        name = op.target or _name(names, op, "it")
        dtype = op.inputs[0].dtype if op.inputs else "an integer type"
        found.append(Diagnostic(
            "requires-grad-int", "error", op.site.line, op.site.code, (name,),
            f"`{name}` would be an integer tensor ({dtype}), and only floating-point or complex tensors can require "
            f"grad: gradients are not defined on integers.\n"
            f"Fix: use floats, e.g. `torch.tensor([1., 2.], requires_grad=True)` or `dtype=torch.float32`, or "
            f"convert first: `x = x.float().requires_grad_()`."))
    return found


def check_numpy_requires_grad(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for op in _raised(trace, _NUMPY_GRAD):
        name = _name(names, op)
        found.append(Diagnostic(
            "numpy-requires-grad", "error", op.site.line, op.site.code, (name,),
            f"`{name}` requires grad, and a NumPy array cannot carry autograd history, so `.numpy()` refuses.\n"
            f"Fix: `{name}.detach().numpy()` - but know that the array shares memory with `{name}` (changing one "
            f"changes the other) and that nothing computed from it gets gradients. Add `.copy()` for an independent array."))
    return found


def check_requires_grad_nonleaf(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for op in _raised(trace, _NONLEAF_FLAG):
        name = _name(names, op)
        found.append(Diagnostic(
            "requires-grad-nonleaf", "error", op.site.line, op.site.code, (name,),
            f"`{name}` is not a leaf (it was computed from tensors that require grad), so its requires_grad flag "
            f"follows from its inputs and cannot be switched off.\n"
            f"Fix: to stop gradients here use `{name} = {name}.detach()`; to make it a new trainable leaf use "
            f"`{name} = {name}.detach().requires_grad_()`."))
    for op in trace.ops:
        if op.error or op.func not in ("requires_grad_", "requires_grad.__set__") or not op.inputs:
            continue
        if op.inputs[0].is_leaf or op.args[:1] == ("False",):
            continue
        name = _name(names, op)
        found.append(Diagnostic(
            "requires-grad-nonleaf", "warning", op.site.line, op.site.code, (name,),
            f"`{op.site.expr or op.site.code}` does nothing: `{name}` is not a leaf and already requires grad "
            f"through its inputs. It will not get a `.grad` either.\n"
            f"Fix: call `{name}.retain_grad()` to keep its gradient, or set requires_grad on the leaves it is computed from."))
    return found


def check_inplace_saved_tensor(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    for event in trace.backwards:
        if not event.error or not _INPLACE_SAVED.search(event.error):
            continue
        versions = _VERSIONS.search(event.error)
        writer, saver = _writer_and_saver(trace, event.seq, event.error)
        name = label(names, writer.inputs[0], "a tensor") if writer else "a tensor"
        message = [f"Backward at line {event.site.line} needed a tensor that was changed in place after it was saved."]
        if saver is not None:
            message.append(f"`{saver.site.expr or saver.site.code}` at line {saver.site.line} saved `{name}` "
                           f"(its backward needs the original value).")
        if writer is not None:
            version = f" (version {versions.group(2)} → {versions.group(1)})" if versions else ""
            message.append(f"Then `{writer.site.expr or writer.site.code}` at line {writer.site.line} modified `{name}` "
                           f"in place{version}.")
        message.append(f"Fix: use the out-of-place form (`{name} = {name} + 1` instead of `{name} += 1`/`{name}.add_(1)`), "
                       f"or modify a copy: `{name} = {name}.clone()` before the in-place op.")
        line = writer.site.line if writer else event.site.line
        code = writer.site.code if writer else event.site.code
        found.append(Diagnostic("inplace-saved-tensor", "error", line, code, (name,), "\n".join(message)))
    return found


def _writer_and_saver(trace: Trace, before: int, error: str) -> tuple[OpEvent | None, OpEvent | None]:
    """The in-place op that bumped a saved tensor's version, and the op that saved it."""
    hint = _OUTPUT_OF.search(error)
    node_hint = (hint.group(1) or hint.group(2) or "") if hint else ""
    candidates = []
    for op in trace.ops:
        if op.seq >= before or not op.inplace or op.error or not op.inputs or op.inputs[0].kind != "tensor":
            continue
        target = op.inputs[0]
        saver = next((s for s in trace.ops if s.seq < op.seq and not s.inplace and s.grad_enabled
                      and any(i.tid == target.tid for i in s.inputs) and s.outputs and s.outputs[0].requires_grad), None)
        if saver is not None:
            match = bool(node_hint) and node_hint.lower() in (target.grad_fn or "").lower()
            candidates.append((match, op, saver))
    if not candidates:
        return None, None
    matching = [c for c in candidates if c[0]] or candidates
    _, writer, saver = matching[-1]
    return writer, saver


def check_exception(trace: Trace, names: Names) -> list[Diagnostic]:
    """Any exception the cell raised; dropped by `analyze` when a specific check explains it."""
    error = trace.error
    if error is None:
        return []
    involved = tuple(n for n in names.by_tid and _names_on_line(trace, names, error.site.line))
    return [Diagnostic("exception", "error", error.site.line, error.site.code, involved,
                       f"The cell raised {error.type}: {error.message}")]


def _names_on_line(trace: Trace, names: Names, line: int | None) -> list[str]:
    if line is None:
        return []
    from .naming import identifiers

    code = next((op.site.code for op in trace.ops if op.site.line == line), "")
    words = identifiers(code)
    return [n for n in trace.final if n in words]
