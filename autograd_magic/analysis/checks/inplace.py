"""inplace-saved-tensor: backward needed a value that an in-place op changed after it was saved.

PyTorch (even in anomaly mode) names only the node that saved it. The trace
also knows which in-place op bumped the version, so both lines are named.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from ...report.model import Diagnostic
from ...trace.events import BackwardEvent, OpEvent, TensorInfo, Trace
from ...trace.names import identifiers
from ..lineage import base_name, first_name, producer, raised_text, user_names, value_text
from ..naming import Names
from ..patterns import ERROR_SHAPE, INPLACE_SAVED, OUTPUT_OF, VERSIONS
from ..source import user_called

_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@"}


@dataclass(frozen=True)
class _Finding:
    target: TensorInfo
    writer: OpEvent
    saver: OpEvent | None
    saved_output: bool  # the saver saved its own result (sigmoid, exp, ...), not an input


def check_inplace_saved_tensor(trace: Trace, names: Names) -> list[Diagnostic]:
    found = []
    raised = raised_text(trace)
    for event in trace.backwards:
        if not event.error or event.error != raised or not INPLACE_SAVED.search(event.error):
            continue
        finding = _locate(trace, event)
        found.append(_diagnostic(trace, names, event, finding))
    return found


def _locate(trace: Trace, event: BackwardEvent) -> _Finding | None:
    """The tensor whose version moved, the in-place op that moved it, and the op that had saved it."""
    error = event.error or ""
    versions = VERSIONS.search(error)
    expected = int(versions.group(2)) if versions else None
    hint = OUTPUT_OF.search(error)
    node_hint = hint.group(2) if hint else None
    shape = _error_shape(error)
    best: _Finding | None = None
    for writes in _inplace_writes(trace, event.seq).values():
        target = writes[0].inputs[0]
        if shape is not None and target.shape != shape:
            continue
        writer = next((w for w in writes if expected is not None and w.inputs[0].version == expected + 1), writes[-1])
        finding = _with_saver(trace, event, target, writer, node_hint)
        if best is None or (finding.saver is not None and best.saver is None):
            best = finding
    return best


def _error_shape(error: str) -> tuple[int, ...] | None:
    match = ERROR_SHAPE.search(error)
    if match is None:
        return None
    return tuple(int(n) for n in match.group(1).replace(" ", "").split(",") if n)


def _inplace_writes(trace: Trace, before: int) -> dict[int, list[OpEvent]]:
    writes: dict[int, list[OpEvent]] = {}
    versions: dict[int, int] = {}
    for op in trace.ops:
        if op.seq >= before:
            break
        if not op.error and op.inputs and op.inputs[0].kind == "tensor" and (op.inplace or _bumped(op, versions)):
            writes.setdefault(op.inputs[0].tid, []).append(op)
        for info in op.inputs + op.outputs:
            versions[info.tid] = info.version
    return writes


def _bumped(op: OpEvent, versions: dict[int, int]) -> bool:
    """Returned its input with a new version: in place (``F.relu(x, inplace=True)``) though not named so."""
    first = op.inputs[0]
    returned = any(o.tid == first.tid for o in op.outputs)
    return returned and first.tid in versions and first.version > versions[first.tid]


def _with_saver(trace: Trace, event: BackwardEvent, target: TensorInfo, writer: OpEvent,
                node_hint: str | None) -> _Finding:
    made = producer(trace, target.tid, before=writer.seq)
    if made is not None and node_hint and made.outputs and _node_class(made.outputs[0].grad_fn) == node_hint:
        return _Finding(target, writer, made, True)
    graph_nodes = {n.nid: n for n in event.graph.nodes} if event.graph else {}
    consumers = [op for op in trace.ops if op.seq < writer.seq and not op.inplace and op.grad_enabled and op.outputs
                 and op.outputs[0].requires_grad and any(i.tid == target.tid for i in op.inputs)]
    saving = [op for op in consumers if _saves_inputs(graph_nodes.get(op.outputs[0].node or -1))]
    candidates = saving or consumers
    return _Finding(target, writer, candidates[-1] if candidates else None, False)


def _node_class(grad_fn: str | None) -> str:
    return _BACKWARD_SUFFIX.sub("", grad_fn or "")


def _saves_inputs(node: object) -> bool:
    saved = getattr(node, "saved", ())
    return any(not s.startswith("result") for s in saved)


def _diagnostic(trace: Trace, names: Names, event: BackwardEvent, finding: _Finding | None) -> Diagnostic:
    call = event.site.expr or event.site.code
    if finding is None:
        return Diagnostic("inplace-saved-tensor", "error", event.site.line, event.site.code, (),
                          f"`{call}` at line {event.site.line} needed a value that was changed in place after it was "
                          f"saved for backward.\nFix: replace in-place ops (`x += 1`, `x.add_(1)`, `x[0] = 0`, "
                          f"`inplace=True`) on tensors used in the graph by their out-of-place forms, or apply them "
                          f"to a `.clone()`.")
    target, writer, saver = finding.target, finding.writer, finding.saver
    saved_at, written = _versions(trace, event, finding)
    name = _value(trace, names, target, saver if finding.saved_output else None)
    lines = [f"`{call}` at line {event.site.line} needed the original value of {name}, but it had been changed "
             f"in place after it was saved:"]
    if saver is not None:
        what = "its result" if finding.saved_output else f"its input {name}"
        node = saver.outputs[0].grad_fn if saver.outputs else None
        lines.append(f"  line {saver.site.line}: {_call(saver)} saved {what} for backward ({node} needs it) "
                     f"- version {saved_at}")
    changed = name if first_name(names, target, trace) else "it"
    lines.append(f"  line {writer.site.line}: {_call(writer)} modified {changed} in place "
                 f"- version {written}")
    lines.append("Fix: " + _fix(writer, first_name(names, target, trace)))
    involved = user_names(names.plain(target.tid),
                          names.plain(saver.outputs[0].tid) if saver is not None and saver.outputs else [],
                          [] if _written_by_user(writer) else _modules_in(trace, writer))
    return Diagnostic("inplace-saved-tensor", "error", writer.site.line, writer.site.code, involved, "\n".join(lines))


def _written_by_user(op: OpEvent) -> bool:
    return user_called(op, op.func.rstrip("_"), "=")


def _call(op: OpEvent) -> str:
    """`y.add_(1)` for a call the cell wrote; `relu` inside `model(x)` for one a library made."""
    expr = op.site.expr or op.site.code
    return f"`{expr}`" if _written_by_user(op) else f"`{op.func}` inside `{expr}`"


def _value(trace: Trace, names: Names, target: TensorInfo, saver: OpEvent | None) -> str:
    if first_name(names, target, trace) or saver is None or _written_by_user(saver):
        return value_text(trace, names, target, "a tensor")
    return f"the result of {_call(saver)}"


def _modules_in(trace: Trace, op: OpEvent) -> list[str]:
    """User variables named in a library call's expression: ``model`` in ``model(x)``."""
    roots = {n.split(".")[0] for n in trace.final} | set(trace.final)
    return sorted(identifiers(op.site.expr or op.site.code) & roots)


def _versions(trace: Trace, event: BackwardEvent, finding: _Finding) -> tuple[int, int]:
    """(version when saved, version after the write) to print: ours, unless torch's error says otherwise.

    Ours come from the recorded calls; a loop's later iterations are only counted (and a torch optimizer's
    later steps not looked into), so the write that broke this backward may be a later, unrecorded call of
    the same line: then the numbers in torch's own message are the true ones.
    """
    saver, writer = finding.saver, finding.writer
    saved_at = _version_before(trace, finding.target.tid, saver.seq) if saver is not None else None
    written = writer.inputs[0].version
    torch_says = VERSIONS.search(event.error or "")
    if torch_says is None:
        return saved_at if saved_at is not None else written - 1, written
    current, expected = int(torch_says.group(1)), int(torch_says.group(2))
    if saved_at != expected or not expected < written <= current:
        return expected, current
    return saved_at, written


def _version_before(trace: Trace, tid: int, seq: int) -> int:
    version = 0
    for op in trace.ops:
        if op.seq > seq:
            break
        for info in op.inputs + op.outputs:
            if info.tid == tid:
                version = info.version
    return version


def _fix(writer: OpEvent, name: str | None) -> str:
    expr = writer.site.expr or writer.site.code
    base = base_name(name or "")
    rewritten = _out_of_place(writer.site.code)
    if rewritten:
        return f"use the out-of-place form at line {writer.site.line}: `{rewritten}` makes a new tensor and leaves " \
               f"the saved one alone."
    if writer.func.endswith("_") and not writer.func.startswith("_") and base and expr.startswith(base + "."):
        out_of_place = expr.replace(f".{writer.func}(", f".{writer.func[:-1]}(", 1)
        return f"use the out-of-place form at line {writer.site.line}: `{base} = {out_of_place}`."
    if base:
        return (f"change a copy: `{base} = {base}.clone()` just before line {writer.site.line}, or use an "
                f"out-of-place op there (for modules: `inplace=False`).")
    return (f"the in-place `{writer.func}` at line {writer.site.line} runs inside `{expr}`: create that layer "
            f"without `inplace=True` (e.g. `nn.ReLU()` instead of `nn.ReLU(inplace=True)`), or give it a copy.")


def _out_of_place(code: str) -> str | None:
    """``x = x + 1`` for ``x += 1``."""
    try:
        body = ast.parse(code.strip()).body
    except SyntaxError:
        return None
    stmt = body[0] if len(body) == 1 else None
    if not isinstance(stmt, ast.AugAssign) or not isinstance(stmt.target, ast.Name):
        return None
    symbol = _SYMBOLS.get(type(stmt.op))
    if symbol is None:
        return None
    return f"{stmt.target.id} = {stmt.target.id} {symbol} {ast.unparse(stmt.value)}"
