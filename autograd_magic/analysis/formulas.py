"""What common autograd functions do to a gradient, in plain words and as a formula.

Each rule gives the words and, per input edge, the formula in terms of
``grad_out`` (the gradient that arrived). Where the step's own numbers show the
factor (a single number arrived and a single number was sent), the formula is
filled in: ``grad_x = grad_out · other = -1 · 2 = -2``. The numbers are the ones
the hooks read; nothing is recomputed from tensors.
"""

from __future__ import annotations

import re
from typing import Any

from ..report.model import Value, flatten

PASS, NEG, TIMES, OTHER = "pass", "neg", "times", "other"  # how an edge's gradient relates to grad_out
Rule = tuple[str, tuple[tuple[str, str], ...]]  # words, (formula, kind) per input edge

RULES: dict[str, Rule] = {
    "Add": ("adds its inputs, so each input gets the gradient unchanged", (("grad_out", PASS), ("grad_out", PASS))),
    "Sub": ("subtracts the second input from the first: the first gets the gradient, the second its negative",
            (("grad_out", PASS), ("−grad_out", NEG))),
    "Mul": ("multiplies, so each factor's gradient is grad_out times the other factor",
            (("grad_out · other", TIMES), ("grad_out · self", TIMES))),
    "Div": ("divides a / b: a's gradient is grad_out / b, b's is −grad_out · a / b²",
            (("grad_out / b", TIMES), ("−grad_out · a / b²", TIMES))),
    "Pow": ("raises x to the power p: the gradient is grad_out · p · x^(p−1)",
            (("grad_out · p · x^(p−1)", TIMES), ("grad_out · x^p · ln x", TIMES))),
    "Rsub": ("subtracts x from a constant, so x's gradient is −grad_out", (("−grad_out", NEG),)),
    "Neg": ("negates, so the gradient changes sign", (("−grad_out", NEG),)),
    "Exp": ("takes exp(x), its own derivative: the gradient is grad_out · exp(x)", (("grad_out · exp(x)", TIMES),)),
    "Log": ("takes log(x): the gradient is grad_out / x", (("grad_out / x", TIMES),)),
    "Sin": ("takes sin(x): the gradient is grad_out · cos(x)", (("grad_out · cos(x)", TIMES),)),
    "Cos": ("takes cos(x): the gradient is −grad_out · sin(x)", (("−grad_out · sin(x)", TIMES),)),
    "Tanh": ("takes tanh(x): the gradient is grad_out · (1 − tanh²(x))", (("grad_out · (1 − tanh²(x))", TIMES),)),
    "Sigmoid": ("takes σ(x): the gradient is grad_out · σ(x) · (1 − σ(x))", (("grad_out · σ(x)(1 − σ(x))", TIMES),)),
    "Relu": ("keeps positive values: the gradient passes where x > 0 and is 0 elsewhere",
             (("grad_out where x > 0, else 0", OTHER),)),
    "Sum": ("sums elements, so every element gets grad_out", (("grad_out, copied to every element", OTHER),)),
    "Mean": ("averages n elements, so every element gets grad_out / n", (("grad_out / n for every element", OTHER),)),
    "Mm": ("multiplies matrices A @ B: A's gradient is grad_out @ Bᵀ, B's is Aᵀ @ grad_out",
           (("grad_out @ Bᵀ", OTHER), ("Aᵀ @ grad_out", OTHER))),
    "Addmm": ("computes bias + A @ B: the bias gets grad_out (summed over broadcast rows), A gets grad_out @ Bᵀ, "
              "B gets Aᵀ @ grad_out", (("grad_out summed to the bias's shape", OTHER), ("grad_out @ Bᵀ", OTHER),
                                      ("Aᵀ @ grad_out", OTHER))),
    "LinalgVectorNorm": ("takes the norm ‖x‖: the gradient is grad_out · x / ‖x‖", (("grad_out · x / ‖x‖", TIMES),)),
    "View": ("reshapes: the gradient is reshaped back", (("grad_out reshaped to the input's shape", OTHER),)),
    "Index": ("picks elements: the gradient goes back to the picked positions, 0 elsewhere",
              (("grad_out placed at the indexed positions, 0 elsewhere", OTHER),)),
}
for _alias, _to in (("MatMul", "Mm"), ("Bmm", "Mm"), ("Mv", "Mm"), ("Dot", "Mm"), ("Norm", "LinalgVectorNorm"),
                    ("UnsafeView", "View"), ("Reshape", "View"), ("ReshapeAlias", "View"), ("Expand", "Sum"),
                    ("Squeeze", "View"), ("Unsqueeze", "View"), ("Select", "Index"), ("Slice", "Index"),
                    ("T", "View"), ("Transpose", "View"), ("Permute", "View")):
    RULES[_alias] = RULES[_to]
ACCUMULATE = "AccumulateGrad"
_BUILTIN = re.compile(r"^(\w+?)Backward\d+$")


def words_for(label: str) -> str:
    """What the node does to the gradient, in plain words."""
    if label == ACCUMULATE:
        return "adds the gradient that arrived into the leaf's .grad (the engine already summed every path)"
    rule = RULES.get(_op(label) or "")
    if rule is not None:
        return rule[0]
    if _op(label) is None and label.endswith("Backward"):
        return f"your autograd.Function {label.removesuffix('Backward')}: its backward() computed this (no formula)"
    return f"computes {label}'s gradient (no formula shown for this function)"


def edge_formula(label: str, edge: int, to: str, arrived: Value | None, sent: Value | None) -> str:
    """``grad_to = <formula> = <numbers>`` for edge ``edge`` of a common function, else just its value."""
    rule = RULES.get(_op(label) or "")
    value = value_text(sent)
    if rule is None or edge >= len(rule[1]):
        return f"grad_{to} = {value}"
    formula, kind = rule[1][edge]
    a, s = single(arrived), single(sent)
    middle = ""
    if a is not None and s is not None and kind == NEG:
        middle = f" = −({number(a)})"
    elif a is not None and s is not None and kind == TIMES and a != 0:
        middle = f" = {number(a)} · {number(s / a)}"
    elif kind == PASS and a is not None and s == a:
        return f"grad_{to} = {formula} = {value}"
    return f"grad_{to} = {formula}{middle} = {value}"


def _op(label: str) -> str | None:
    match = _BUILTIN.match(label)
    return match.group(1) if match else None


def single(value: Value | None) -> float | None:
    """The one number a value holds, if it holds exactly one."""
    if value is None or value.values is None:
        return None
    flat = list(flatten(value.values))
    return float(flat[0]) if len(flat) == 1 and isinstance(flat[0], (int, float)) else None


def value_text(value: Value | None) -> str:
    """``-1``, ``[1, 2, 3]``, or ``(100, 10) norm 3.2 in [-0.5, 0.9]``: how replay steps write a value."""
    if value is None:
        return "?"
    if value.values is not None:
        flat = list(flatten(value.values))
        if len(flat) == 1:
            return number(flat[0])
        return "[" + ", ".join(number(v) for v in flat) + "]"
    shape = "(" + ", ".join(map(str, value.shape)) + ")"
    if value.norm is None:
        return f"{shape} (values not read)"
    span = f" in [{number(value.low)}, {number(value.high)}]" if value.low is not None else ""
    return f"{shape} norm {number(value.norm)}{span}"


def number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


