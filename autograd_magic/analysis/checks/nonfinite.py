"""non-finite: where the first nan/inf came from, and why, in words (see analysis.nonfinite for the rules).

Forward: the op that made it from finite inputs, with the reason read from its inputs (log of 0, 0/0,
exp overflow, ...) and the fix that fits. Backward: the node whose derivative was not finite where its
forward values were. Training: the first step whose loss or gradient norm stopped being finite,
linked to the op above, or said to lie past what was recorded. A ``torch.amp.GradScaler`` skipping
steps whose scaled gradients overflowed is doing its job: a note, never a warning.
"""

from __future__ import annotations

import math

from ...report.model import Diagnostic
from ...trace.events import OpEvent, Trace, TrainingTrace
from ..naming import Names
from ..nonfinite import BackwardOrigin, Origin, Spread, backward_origin, spread_of
from ..source import source_line
from .reasons import kinds, reason

KIND = "non-finite"


def check_non_finite(trace: Trace, names: Names) -> list[Diagnostic]:
    """The first nan/inf the cell computed that reached a loss, a gradient or a named result."""
    spread = spread_of(trace)
    origin = spread.first_reaching()
    if origin is not None:
        return [_forward(trace, names, spread, origin)]
    if trace.scales:  # a GradScaler's scaled gradients overflow on purpose: it skips those steps itself
        return _scaler_note(trace)
    found = backward_origin(trace)
    if found is not None:
        return [_backward(trace, names, found)]
    late = _training_step(trace.training)
    return [] if late is None else [_unrecorded(trace, late)]


# -- forward --------------------------------------------------------------------------------------
def _forward(trace: Trace, names: Names, spread: Spread, origin: Origin) -> Diagnostic:
    op = origin.op
    nf = op.nonfinite
    assert nf is not None
    what = _what(op, names)
    because, fix = reason(op, nf, _input_names(op, names, spread), spread)
    where = spread.reached[op.seq]
    reached = ("the loss backward started from" if op.seq in spread.roots
               else f"`{where}`" if where != what.strip("`") else "")
    finite = all(s is None or s.finite for s in nf.inputs)
    text = (f"{what} became {kinds(nf.output)} at line {op.site.line} (`{op.func}`)"
            f"{', from finite inputs' if finite else ''}: {because}" + (f" It reached {reached}." if reached else "")
            + _step_sentence(trace.training))
    severity = "error" if op.seq in spread.roots or trace.training is not None else "warning"
    return Diagnostic(KIND, severity, op.site.line, source_line(trace, op.site.line),
                      _names_of(op, names), f"{text}\nFix: {fix}")


def _what(op: OpEvent, names: Names) -> str:
    name = names.label(op.outputs[0].tid) if op.outputs else None
    return f"`{name}`" if name else f"`{op.site.expr or op.site.code or op.func}`"


def _names_of(op: OpEvent, names: Names) -> tuple[str, ...]:
    name = names.label(op.outputs[0].tid) if op.outputs else None
    return (name.split(", ")[0],) if name else ()


def _input_names(op: OpEvent, names: Names, spread: Spread) -> list[str]:
    out = []
    for index, info in enumerate(op.inputs):
        name = names.label(info.tid)
        made = spread.producer.get(info.tid)
        expr = made.site.expr if made is not None and made.seq < op.seq else ""
        out.append(f"`{name.split(', ')[0]}`" if name else f"`{expr}`" if expr else f"input {index + 1}")
    return out

# -- backward -------------------------------------------------------------------------------------
_DERIVATIVES = {
    "SqrtBackward0": ("sqrt's derivative 1/(2·√x) is infinite at x = 0", "`torch.sqrt(x + 1e-12)`"),
    "DivBackward0": ("a/b's derivative -a/b² is infinite where b = 0", "`a / (b + 1e-12)` or `b.clamp(min=1e-12)`"),
    "PowBackward0": ("x**p's derivative p·x**(p-1) is infinite at x = 0 for p < 1", "`(x + 1e-12) ** p`"),
    "LogBackward0": ("log's derivative 1/x is infinite at x = 0", "`torch.log(x.clamp(min=1e-12))`"),
    "AcosBackward0": ("acos's derivative -1/√(1-x²) is infinite at ±1", "`x.clamp(-1 + 1e-6, 1 - 1e-6)`"),
    "AsinBackward0": ("asin's derivative 1/√(1-x²) is infinite at ±1", "`x.clamp(-1 + 1e-6, 1 - 1e-6)`"),
    "LinalgVectorNormBackward0": ("a norm's derivative x/‖x‖ is 0/0 at a zero vector",
                                  "`torch.sqrt((x ** 2).sum() + 1e-12)` instead of the norm"),
    "NormBackward1": ("a norm's derivative x/‖x‖ is 0/0 at a zero vector", "`torch.sqrt((x ** 2).sum() + 1e-12)`"),
}


def _backward(trace: Trace, names: Names, found: BackwardOrigin) -> Diagnostic:
    node, step = found.node, found.step
    site = node.site if node is not None else None
    name = names.label(node.tid) if node is not None and node.tid is not None else None
    what = f"`{name}`" if name else f"`{site.expr or site.code}`" if site else step.label
    words, fix = _DERIVATIVES.get(step.label, ("its derivative is not finite at the values it saw",
                                               "keep its input away from the point where the derivative blows up"))
    where = f" at line {site.line}" if site is not None and site.line else ""
    forward = "The forward values were fine; the derivative is not"
    if "WhereBackward0" in found.consumers:
        forward = ("It sits in the branch `torch.where` did not take: where sends it a gradient of 0, and "
                   "0 · inf = nan")
        fix = ("make the untaken branch safe as well: `torch.where(ok, f(torch.where(ok, x, 1)), 0)`, so that f "
               "never sees the bad values")
    text = (f"The gradient became {found.kind or 'nan'} in backward at {what}{where} ({step.label}): the gradient "
            f"that arrived there was finite, and {words}. {forward}." + _step_sentence(trace.training))
    return Diagnostic(KIND, "error", site.line if site else None, source_line(trace, site.line if site else None),
                      (name.split(", ")[0],) if name else (), f"{text}\nFix: {fix}.")


# -- training -------------------------------------------------------------------------------------
def _training_step(training: TrainingTrace | None) -> tuple[int, str, int] | None:
    """(step, what stopped being finite, steps) for the first step whose loss or a gradient norm did."""
    if training is None:
        return None
    for step in training.steps:
        if step.loss is not None and not math.isfinite(step.loss):
            return step.step, "the loss", len(training.steps)
        if any(n is not None and not math.isfinite(n) for n in step.grad_norms):
            return step.step, "the gradient norm", len(training.steps)
    return None


def _step_sentence(training: TrainingTrace | None) -> str:
    late = _training_step(training)
    return "" if late is None else f" In the loop, {late[1]} stopped being finite at step {late[0]}."


def _unrecorded(trace: Trace, late: tuple[int, str, int]) -> Diagnostic:
    step, what, _ = late
    training = trace.training
    assert training is not None
    text = (f"{what[0].upper()}{what[1:]} stopped being finite at step {step}, after recording stopped: only the "
            "first calls of each line are recorded in detail, so the op where it started was not seen.\n"
            f"To find it, record more calls per line (`%config AutogradMagic.max_repeats = {max(step, 8) + 1}`) "
            f"and run the cell again, or run only the steps up to {step}.")
    return Diagnostic(KIND, "note", training.line, source_line(trace, training.line), (), text)


def _scaler_note(trace: Trace) -> list[Diagnostic]:
    """Which recorded steps a GradScaler skipped (its update saw an inf), and the scale it settled on."""
    updates = [op.scaler_update for op in trace.ops if op.scaler_update is not None]
    skipped = [number for number, (found, _) in enumerate(updates, 1) if found]
    if not skipped:
        return []
    shown = ", ".join(map(str, skipped[:10])) + (" ..." if len(skipped) > 10 else "")
    last = next((scale for _, scale in reversed(updates) if scale is not None), None)
    scale = ", ".join(f"{s:g}" for s in trace.scales) or (f"{last:g}" if last is not None else "?")  # read last
    seen = "" if (trace.training is None or len(updates) >= trace.training.calls) else \
        f" (of the first {len(updates)} updates, the ones recorded)"
    text = (f"torch.amp.GradScaler skipped step{'s' if len(skipped) > 1 else ''} {shown}{seen} on purpose: their "
            f"scaled gradients overflowed, which is how it finds its scale; it settled on {scale}. Nothing to fix.")
    line = trace.training.line if trace.training is not None else None
    return [Diagnostic(KIND, "note", line, source_line(trace, line), (), text)]


# -- words ----------------------------------------------------------------------------------------
