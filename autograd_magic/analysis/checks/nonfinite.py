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
from ...trace.events import NonFinite, OpEvent, Stats, Trace, TrainingTrace
from ..naming import Names
from ..nonfinite import BackwardOrigin, Origin, Spread, backward_origin, spread_of
from ..source import source_line

KIND = "non-finite"
_LOGS = frozenset({"log", "log_", "log2", "log2_", "log10", "log10_", "log1p", "log1p_"})
_SQRTS = frozenset({"sqrt", "sqrt_", "rsqrt", "rsqrt_"})
_POWS = frozenset({"pow", "pow_", "__pow__", "__rpow__", "float_power"})
_DIVS = frozenset({"div", "div_", "__truediv__", "__rdiv__", "__rtruediv__", "true_divide", "divide", "__itruediv__",
                   "reciprocal", "reciprocal_"})
_EXPS = frozenset({"exp", "exp_", "exp2", "expm1", "cosh", "sinh"})
_SUBS = frozenset({"sub", "sub_", "__sub__", "__rsub__", "rsub", "add", "add_", "__add__", "__radd__", "__iadd__",
                   "__isub__", "sum", "cumsum", "mean"})
_MULS = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "matmul", "mm", "bmm", "einsum", "dot",
                   "__matmul__", "linear", "prod"})
_ARCS = frozenset({"acos", "asin", "acos_", "asin_", "arccos", "arcsin"})
_SOFTMAX = frozenset({"softmax", "_softmax", "log_softmax", "softmin"})
_SPREADS = frozenset({"std", "var", "std_mean", "var_mean"})
_SQUASH = frozenset({"softmax", "_softmax", "sigmoid", "softmin"})


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
    text = (f"{what} became {_kinds(nf.output)} at line {op.site.line} (`{op.func}`)"
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


def reason(op: OpEvent, nf: NonFinite, inputs: list[str], spread: Spread) -> tuple[str, str]:
    """(why, in words from what the inputs held; the fix that fits)."""
    first = nf.inputs[0] if nf.inputs else None
    name = inputs[0] if inputs else "its input"
    func = op.func
    if func in _LOGS and first is not None:
        return _log_reason(op, first, name, spread)
    if func in _SQRTS and first is not None and first.negatives:
        return (f"the square root of a negative number is nan, and {_held(name, first)}.",
                f"`torch.sqrt({_bare(name)}.clamp(min=0))`, or find why {name} goes negative.")
    if func in _SQRTS and first is not None and first.zeros:
        return (f"rsqrt(0) is inf, and {_held(name, first)}.", f"`torch.rsqrt({_bare(name)}.clamp(min=1e-12))`.")
    if func in _POWS:
        return _pow_reason(op, nf, name)
    if func in _SPREADS and first is not None and first.numel <= 1:
        return (f"the {func} of a single value divides by n - 1 = 0 (Bessel's correction), and {name} held "
                f"{first.numel} value.", f"`{func}(correction=0)` (or `unbiased=False`), or reduce over more "
                "than one value.")
    if func in _DIVS:
        return _div_reason(op, nf, inputs)
    if func in _EXPS and first is not None and first.high is not None and first.high > math.log(nf.dtype_max):
        return (f"exp overflows past the largest {_dtype(nf)} ({nf.dtype_max:.3g}) for inputs above "
                f"{math.log(nf.dtype_max):.4g}, and {name} reached {first.high:.4g}.",
                "subtract the maximum first (`torch.exp(x - x.max())`), or let torch do it: `torch.logsumexp`, "
                "`torch.softmax`, `torch.log_softmax`.")
    if func in _ARCS and first is not None and first.outside_unit:
        return (f"{func.rstrip('_')} is defined on [-1, 1] only, and {first.outside_unit} element(s) of {name} lay "
                f"outside it (from {first.low:.6g} to {first.high:.6g}).",
                f"clamp first: `{_bare(name)}.clamp(-1 + 1e-6, 1 - 1e-6)` (its derivative is infinite at ±1 too).")
    if func in _SOFTMAX and nf.output.nan and any(s is not None and s.neginf for s in nf.inputs):
        return ("a whole row of scores was -inf (every position masked), and softmax of a row with nothing left "
                "is 0/0 = nan.",
                "give masked positions a large finite score (`torch.finfo(x.dtype).min`) instead of -inf, or keep "
                "at least one position per row unmasked.")
    if nf.output.nan and _has(nf, "posinf") and _has(nf, "neginf") or nf.output.nan and func in _SUBS:
        return ("inf - inf is nan: " + _all_held(inputs, nf) + ".",
                "find where the infinity came from; a log-space sum should use `torch.logsumexp`.")
    if nf.output.nan and func in _MULS and any(s is not None and (s.posinf or s.neginf) for s in nf.inputs):
        return ("0 · inf is nan: " + _all_held(inputs, nf) + ".",
                "keep the infinity out of the product, e.g. a safe `torch.where` on the factor before multiplying.")
    if not nf.output.nan and (func in _MULS or func in _SUBS or func in _POWS):
        return (f"the result passed the largest {_dtype(nf)} ({nf.dtype_max:.3g}): " + _all_held(inputs, nf) + ".",
                "scale the values down (normalise the inputs, a smaller learning rate), or compute in float64.")
    return (f"`{func}` turned them into {_kinds(nf.output)}: " + _all_held(inputs, nf) + ".",
            "check the values going into this line; `torch.clamp` or a safe `torch.where` can keep them in range.")


def _log_reason(op: OpEvent, first: Stats, name: str, spread: Spread) -> tuple[str, str]:
    low = -1 if op.func.startswith("log1p") else 0
    made = spread.producer.get(op.inputs[0].tid) if op.inputs else None
    because = (f"log of {low} is -inf and of anything below {low} nan, and {_held(name, first, one_plus=low == -1)}.")
    if made is not None and made.func in _SQUASH:
        fn = "F.logsigmoid" if made.func == "sigmoid" else "torch.log_softmax"
        return (because + f" `{made.func}` underflows to 0 for inputs far from 0, and log then gives -inf.",
                f"`{fn}(...)` computes the log directly, without the underflow.")
    if made is not None and made.func in ("sum", "mean") and spread.producer.get(made.inputs[0].tid if made.inputs
                                                                                else -1, made).func in _EXPS:
        return because, "`torch.logsumexp(x, dim)` computes log(sum(exp(x))) without overflow or underflow."
    return because, f"`torch.log({_bare(name)}.clamp(min=1e-12))` (or add a small eps), or find why {name} reaches 0."


def _pow_reason(op: OpEvent, nf: NonFinite, name: str) -> tuple[str, str]:
    first = nf.inputs[0] if nf.inputs else None
    exponent = _number(op.args[0]) if op.args else None
    if op.func == "__rpow__" or first is None:
        return (f"the power overflowed the largest {_dtype(nf)} ({nf.dtype_max:.3g}).",
                "scale the exponent down, or compute in log space.")
    if nf.output.nan and first.negatives:
        return (f"a fractional power{f' ({exponent:g})' if exponent is not None else ''} of a negative number is "
                f"nan, and {_held(name, first)}.", f"`{_bare(name)}.clamp(min=0) ** p`, or `{_bare(name)}.abs() ** p`.")
    if exponent is not None and exponent < 0 and first.zeros:
        return (f"0 to a negative power ({exponent:g}) is inf, and {_held(name, first)}.",
                f"`{_bare(name)}.clamp(min=1e-12) ** {exponent:g}`.")
    return (f"the power passed the largest {_dtype(nf)} ({nf.dtype_max:.3g}); {_held(name, first)}.",
            "scale the values down, or compute in log space.")


def _div_reason(op: OpEvent, nf: NonFinite, inputs: list[str]) -> tuple[str, str]:
    scalar_zero = any(_number(a) == 0 for a in op.args)
    if op.func in ("__rdiv__", "__rtruediv__", "reciprocal", "reciprocal_") or len(nf.inputs) < 2 and not scalar_zero:
        divisor, name = (nf.inputs[0] if nf.inputs else None), (inputs[0] if inputs else "the divisor")
    else:
        divisor, name = (nf.inputs[1] if len(nf.inputs) > 1 else None), (inputs[1] if len(inputs) > 1 else "0")
    held = _held(name, divisor) if divisor is not None else f"it divided by {name}"
    return (f"0/0 is nan and x/0 is ±inf, and {held}.",
            f"keep the divisor away from 0: `a / {_bare(name)}.clamp(min=1e-12)` (or `+ eps`), or a safe "
            f"`torch.where({_bare(name)} != 0, {_bare(name)}, 1)` in the divisor (a where around the result "
            "still sends nan gradients).")


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
def _kinds(stats: Stats) -> str:
    found = [w for w, n in (("nan", stats.nan), ("inf", stats.posinf), ("-inf", stats.neginf)) if n]
    return " and ".join(found) or "non-finite"


def _held(name: str, stats: Stats | None, one_plus: bool = False) -> str:
    if stats is None:
        return f"{name} was not read"
    bits = []
    if stats.zeros:
        bits.append(f"{stats.zeros} zero{'s' if stats.zeros > 1 else ''}")
    if stats.negatives:
        bits.append(f"{stats.negatives} negative{'s' if stats.negatives > 1 else ''}")
    span = f" (from {stats.low:.4g} to {stats.high:.4g})" if stats.low is not None and stats.high is not None else ""
    if one_plus or not bits:
        return f"{name} held {stats.numel} value{'s' if stats.numel > 1 else ''}{span}"
    return f"{name} held {' and '.join(bits)}{span}"


def _all_held(inputs: list[str], nf: NonFinite) -> str:
    parts = []
    for name, stats in zip(inputs, nf.inputs, strict=False):
        if stats is None:
            continue
        odd = _kinds(stats) if not stats.finite else ""
        parts.append(f"{name} held " + (odd + (" (" + _span(stats) + ")" if _span(stats) else "") if odd
                                         else _span(stats) or "finite values"))
    return "; ".join(dict.fromkeys(parts)) or "its inputs were not read"  # `t - t` names `t` once


def _span(stats: Stats) -> str:
    if stats.low is None or stats.high is None:
        return ""
    return f"values from {stats.low:.4g} to {stats.high:.4g}"


def _has(nf: NonFinite, attr: str) -> bool:
    return any(s is not None and getattr(s, attr) for s in nf.inputs)


def _dtype(nf: NonFinite) -> str:
    return {65504.0: "float16", 3.3895313892515355e38: "bfloat16", 1.7976931348623157e308: "float64"}.get(
        nf.dtype_max, "float32")


def _bare(name: str) -> str:
    return name.strip("`") if name.startswith("`") and " " not in name else "x"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
