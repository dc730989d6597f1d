"""Checks on how values flow through a cell: history-growing, nonleaf-grad and eval-keeps-grad."""

from __future__ import annotations

import re

from ...report.model import Diagnostic
from ...trace.events import OpEvent, Trace
from ..lineage import backward_seqs, base_name, first_name, producer, show, show_attr, user_names
from ..naming import Names
from ..source import assigned_name, user_called

_CONVERSIONS = {"to", "cuda", "cpu", "double", "float", "half", "bfloat16", "type"}


# -- history-growing --------------------------------------------------------------------
def check_history_growing(trace: Trace, names: Names) -> list[Diagnostic]:
    """`total = total + loss` in a loop that also runs backward: the graph of `total` only grows."""
    found = []
    backwards = backward_seqs(trace)
    for line, chain in _self_chains(trace):
        if len(chain) < 2 or not any(chain[0].seq < b < chain[-1].seq for b in backwards):
            continue
        code = chain[-1].site.code
        last = chain[-1].outputs[0] if chain[-1].outputs else None
        name = assigned_name(code) or first_name(names, last, trace) or "it"
        found.append(Diagnostic(
            "history-growing", "warning", line, code, user_names([name]),
            f"`{code}` at line {line} builds {show(name)} from its own previous value on every loop iteration "
            f"while it requires grad, so {show(name)} keeps the graph of every iteration alive (backward runs "
            f"inside the same loop): memory and time grow with each step.\n"
            f"Fix: accumulate a number, not a graph: `{name} += loss.item()`, or `{name} = {name}.detach()` "
            f"before reusing it (for a recurrent state carried across batches)."))
    return found


def _self_chains(trace: Trace) -> list[tuple[int, list[OpEvent]]]:
    """Per line, unbroken runs of executions that each extended the value the previous one made."""
    chains: list[tuple[int, list[OpEvent]]] = []
    current: dict[int, list[OpEvent]] = {}
    previous: dict[int, tuple[int | None, set[int]]] = {}  # line -> (last grad output, in-place grad targets)
    for run in _runs(trace.ops):
        line = run[0].site.line
        if line is None:
            continue
        last_out, targets = previous.get(line, (None, set()))
        link = next((op for op in run if _extends(op, last_out, targets)), None)
        if link is not None:
            current.setdefault(line, []).append(link)
        elif line in current:
            chains.append((line, current.pop(line)))  # the value was started afresh (`total = 0`)
        previous[line] = _state_after(run)
    return chains + list(current.items())


def _runs(ops: tuple[OpEvent, ...]) -> list[list[OpEvent]]:
    """Consecutive ops of one line: one execution of that line."""
    runs: list[list[OpEvent]] = []
    for op in ops:
        if runs and runs[-1][0].site.line == op.site.line:
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _extends(op: OpEvent, last_out: int | None, targets: set[int]) -> bool:
    if not op.grad_enabled or op.error or not op.inputs:
        return False
    if op.inplace:
        target, others = op.inputs[0], op.inputs[1:]
        grown = target.tid in targets or target.tid == last_out
        return grown and target.requires_grad and any(o.requires_grad for o in others)
    return last_out is not None and any(i.tid == last_out for i in op.inputs) and _grows(op)


def _grows(op: OpEvent) -> bool:
    return bool(op.outputs) and op.outputs[0].kind == "tensor" and op.outputs[0].grad_fn is not None


def _state_after(run: list[OpEvent]) -> tuple[int | None, set[int]]:
    grown = [op for op in run if op.grad_enabled and not op.inplace and not op.error and _grows(op)]
    targets = {op.inputs[0].tid for op in run if op.inplace and op.grad_enabled and op.inputs}
    return (grown[-1].outputs[0].tid if grown else None), targets


def _rebinds_leaf(names: Names, made: OpEvent, name: str) -> bool:
    """``w = w - lr * w.grad``: the name of a leaf bound to a value computed from that leaf."""
    return assigned_name(made.site.code) == name and any(
        i.is_leaf and i.requires_grad and name in {base_name(n) for n in names.all(i.tid)} for i in made.inputs)


# -- nonleaf-grad --------------------------------------------------------------------------
def check_nonleaf_grad(trace: Trace, names: Names) -> list[Diagnostic]:
    """`.grad` read on a tensor that is not a leaf: it is None."""
    found = []
    retained = {op.inputs[0].tid for op in trace.ops if op.func == "retain_grad" and op.inputs}
    for op in trace.ops:
        if op.func != "grad.__get__" or not op.inputs or op.inputs[0].is_leaf or not user_called(op, ".grad"):
            continue
        tensor = op.inputs[0]
        if tensor.tid in retained:
            continue
        name = first_name(names, tensor, trace) or "this tensor"
        found.append(Diagnostic("nonleaf-grad", "warning", op.site.line, op.site.code, user_names([name]),
                                _nonleaf_message(trace, names, name, tensor.grad_fn, producer(trace, tensor.tid))))
    return found


def _nonleaf_message(trace: Trace, names: Names, name: str, grad_fn: str | None, made: OpEvent | None) -> str:
    base = base_name(name)
    message = (f"{show_attr(name, 'grad')} is None: {show(name)} is not a leaf (it has grad_fn={grad_fn}), and "
               f"PyTorch stores .grad only on leaves, the tensors you create with `requires_grad=True`.\n")
    trap = made if made is not None and made.func in _CONVERSIONS and made.inputs else None
    if trap is not None and trap.inputs[0].is_leaf and trap.inputs[0].requires_grad:
        return message + (
            f"Line {trap.site.line} (`{trap.site.code}`) set `requires_grad=True` on a tensor and then converted "
            f"it with `.{trap.func}(...)`: {show(name)} names the converted copy, and the leaf that gets the "
            f"gradient has no name.\nFix: create it in its final form, e.g. "
            f"`{base} = torch.randn(..., dtype=torch.float64, device=device, requires_grad=True)`, or convert "
            f"first and then call `.requires_grad_()`: `{base} = torch.randn(...).{trap.func}(...).requires_grad_()`.")
    if made is not None and _rebinds_leaf(names, made, base):
        return message + (
            f"Line {made.site.line} (`{made.site.code}`) rebound {show(base)} to a new tensor computed from the "
            f"leaf, so from then on {show(base)} is not the leaf and its `.grad` stays None (the next step of a "
            f"loop reads None).\nFix: update the leaf in place without recording it:\n"
            f"    with torch.no_grad():\n        {base} -= ...  # e.g. lr * {base}.grad\n"
            f"    {base}.grad = None\nor let an optimizer do it (`opt.step()`; `opt.zero_grad()`).")
    return message + (f"Fix: read the gradient of the leaf it was computed from, or call `{base}.retain_grad()` "
                      f"before backward to keep this one.")


# -- eval-keeps-grad ---------------------------------------------------------------------------
_EVAL = re.compile(r"\b([A-Za-z_][\w.]*)\.eval\(\)")


def check_eval_keeps_grad(trace: Trace, names: Names) -> list[Diagnostic]:
    """`model.eval()` taken for `no_grad`: evaluation mode changes layers, not autograd; the graph is still built."""
    called = _eval_call(trace)
    if called is None or any(b > called[0] for b in _backward_lines(trace)):
        return []  # a backward after eval() means the graph is wanted
    line, model = called
    recorded = next((op for op in trace.ops if (op.site.line or 0) > line and _records_graph(op)), None)
    if recorded is None:
        return []
    out = recorded.outputs[0]
    name = recorded.target or assigned_name(recorded.site.code) or first_name(names, out, trace)
    what = show(name) if name else f"`{recorded.site.expr or recorded.site.code}`"
    return [Diagnostic(
        "eval-keeps-grad", "note", recorded.site.line, recorded.site.code, user_names([name, model]),
        f"`{model}.eval()` at line {line} switches layers such as dropout and batch norm to evaluation behaviour, "
        f"but it does not stop autograd: {what} at line {recorded.site.line} still records a graph "
        f"(grad_fn={out.grad_fn}), which keeps activations in memory.\n"
        f"If this is inference, also wrap it in `with torch.no_grad():` (or `with torch.inference_mode():`).")]


def _eval_call(trace: Trace) -> tuple[int, str] | None:
    for line, text in enumerate(trace.source.splitlines(), start=1):
        match = _EVAL.search(text.split("#")[0])
        if match:
            return line, match.group(1)
    return None


def _backward_lines(trace: Trace) -> list[int]:
    return [b.site.line for b in trace.backwards if b.site.line is not None]


def _records_graph(op: OpEvent) -> bool:
    return (op.grad_enabled and not op.error and bool(op.outputs) and op.outputs[0].kind == "tensor"
            and op.outputs[0].requires_grad and not op.outputs[0].is_leaf)
