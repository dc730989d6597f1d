"""Why an op made nan or inf, in words read from what its inputs held, and the fix that fits.

Used by the non-finite check (checks/nonfinite.py): `reason` names the cause for the ops people
meet (log of 0, 0/0, exp overflow, sqrt of a negative, inf - inf, 0 · inf, acos outside [-1, 1], a
fully masked softmax row, std of one value) and falls back to a sentence saying which input held what.
"""

from __future__ import annotations

import math

from ...trace.events import NonFinite, OpEvent, Stats
from ..nonfinite import Spread

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
    return (f"`{func}` turned them into {kinds(nf.output)}: " + _all_held(inputs, nf) + ".",
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



# -- words ---------------------------------------------------------------------------------------
def kinds(stats: Stats) -> str:
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
        odd = kinds(stats) if not stats.finite else ""
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
