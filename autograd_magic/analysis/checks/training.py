"""Checks on gradient flow across the steps of a training loop (`Trace.training`).

vanishing-gradients, exploding-gradients, never-gets-gradient and constant-loss read
only the per-step loss and gradient norms capture recorded; they say nothing for a
cell that ran backward once.
"""

from __future__ import annotations

import math
from statistics import median

from ...report.model import Diagnostic
from ...trace.events import Trace, TrainingTrace
from ..naming import Names
from ..source import source_line

VANISHING_RATIO = 1e-3  # first layer's gradient norm over the last layer's, below which gradients vanish
EXPLODING_GROWTH = 1e3  # total gradient norm at the end over its start, above which gradients explode
MIN_STEPS = 3  # steps needed before a trend means anything


def check_exploding_gradients(trace: Trace, names: Names) -> list[Diagnostic]:
    """A loss or gradient norm that became inf/nan, or gradient norms that grew by orders of magnitude."""
    training = trace.training
    if training is None or trace.scales:  # a GradScaler's gradients are scaled, and it skips overflows itself
        return []
    first = _first_non_finite(training)
    if first is not None and training.steps and first[0] == training.steps[0].step:
        return []  # broken from the first step: nothing grew, the non-finite check says where it started
    if first is not None:
        step, what = first
        return [_diagnostic(trace, training, "exploding-gradients", "error", (what,) if what != "the loss" else (),
                            f"{_show(what)} became inf or nan at step {step} of {len(training.steps)}: from then on "
                            f"every update writes garbage into the weights.\n" + _EXPLODING_FIX)]
    steps = [(s, _total(s.grad_norms)) for s in training.steps]
    steps = [(s, t) for s, t in steps if t > 0]
    if len(steps) < MIN_STEPS:
        return []
    start, end = steps[0][1], steps[-1][1]
    if end < EXPLODING_GROWTH * start or end < max(t for _, t in steps):
        return []
    passed = next(s for s, t in steps if t >= 100 * start)
    largest = max(zip(training.parameters, passed.grad_norms, strict=False), key=lambda p: p[1] or 0.0)[0]
    return [_diagnostic(trace, training, "exploding-gradients", "warning", (largest,),
                        f"The total gradient norm grew from {start:.3g} to {end:.3g} over {len(steps)} steps: the "
                        f"training is diverging. It passed 100 times its start at step {passed.step}, where "
                        f"`{largest}` had the largest gradient.\n" + _EXPLODING_FIX)]


_EXPLODING_FIX = ("Fix: lower the learning rate; clip with `torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)` "
                  "between `backward()` and `step()`; check the inputs and targets are normalised.")


def check_vanishing_gradients(trace: Trace, names: Names) -> list[Diagnostic]:
    """The first layer's gradients are orders of magnitude smaller than the last layer's."""
    training = trace.training
    if training is None or len(training.steps) < 2:
        return []
    layers = _layer_norms(training)
    if len(layers) < 2:
        return []
    (first, low), (last, high) = layers[0], layers[-1]
    if high <= 0 or low >= VANISHING_RATIO * high:
        return []
    return [_diagnostic(trace, training, "vanishing-gradients", "warning", (first, last),
                        f"Gradients vanish: the typical gradient norm of `{first}` ({low:.2g}) is "
                        f"{high / max(low, 1e-300):.0e} times smaller than that of `{last}` ({high:.2g}), "
                        f"so the early layers barely learn.\n"
                        f"Fix: use ReLU/GELU instead of sigmoid/tanh between layers, a proper initialisation "
                        f"(`nn.init.kaiming_normal_`), normalisation layers (`nn.LayerNorm`/`nn.BatchNorm1d`) or "
                        f"residual connections; fewer layers if the model is very deep.")]


def check_never_gets_gradient(trace: Trace, names: Names) -> list[Diagnostic]:
    """Trainable parameters (requires_grad=True) whose .grad stayed None through every step."""
    training = trace.training
    if training is None or not training.steps:
        return []
    never = tuple(n for n, got in zip(training.parameters, training.got_grad, strict=True) if not got)
    if not never or len(never) == len(training.parameters):
        return []
    listed = ", ".join(f"`{n}`" for n in never[:6]) + (f" and {len(never) - 6} more" if len(never) > 6 else "")
    return [_diagnostic(trace, training, "never-gets-gradient", "warning", never[:6],
                        f"{listed} require grad but never got a gradient in {len(training.steps)} backward calls: "
                        f"the loss does not depend on them, so the optimizer never changes them.\n"
                        f"Fix: if they are frozen on purpose, say so with `requires_grad_(False)`; otherwise use "
                        f"the layer in `forward` (or delete it), and look for a `.detach()`, `.data` or `no_grad()` "
                        f"that cuts them off.")]


def check_constant_loss(trace: Trace, names: Names) -> list[Diagnostic]:
    """An optimizer is at hand, yet the loss has the same value at every step: nothing changes the model.

    Without an optimizer a repeated backward is often a demonstration (accumulating gradients), not training.
    """
    training = trace.training
    losses = [] if training is None else [s.loss for s in training.steps if s.loss is not None]
    if training is None or not training.optimizer or len(losses) < MIN_STEPS:
        return []
    if not all(math.isfinite(v) for v in losses):
        return []
    if max(losses) - min(losses) > 1e-7 * max(1.0, abs(losses[0])):
        return []
    return [_diagnostic(trace, training, "constant-loss", "warning", (),
                        f"The loss is {losses[0]:.6g} at every one of {len(losses)} steps: the loop does not "
                        f"change anything the loss depends on.\n"
                        f"Fix: call `optimizer.step()` after `backward()`; build the optimizer over this model's "
                        f"parameters (`torch.optim.SGD(model.parameters(), lr=...)`) with a learning rate above 0; "
                        f"don't compute the loss from a detached output.")]


def _first_non_finite(training: TrainingTrace) -> tuple[int, str] | None:
    for step in training.steps:
        for name, norm in zip(training.parameters, step.grad_norms, strict=False):
            if norm is not None and not math.isfinite(norm):
                return step.step, name
        if step.loss is not None and not math.isfinite(step.loss):
            return step.step, "the loss"
    return None


def _total(norms: tuple[float | None, ...]) -> float:
    return math.sqrt(sum(n * n for n in norms if n is not None and math.isfinite(n)))


def _layer_norms(training: TrainingTrace) -> list[tuple[str, float]]:
    """(layer, median over steps of its gradient norm), layers of one model in its order.

    Only module parameters (``model.0.weight``) have a depth order; loose tensors (``a``, ``b`` fitted
    by hand) are not layers, and their norms differ for reasons that are not depth.
    """
    per_layer: dict[str, list[int]] = {}
    models = [name.split(".", 1)[0] for name in training.parameters if "." in name]
    for i, name in enumerate(training.parameters):
        if training.got_grad[i] and models and name.split(".", 1)[0] == models[0] and "." in name:
            per_layer.setdefault(name.rsplit(".", 1)[0], []).append(i)
    out = []
    for layer, indices in per_layer.items():
        totals = [_total(tuple(s.grad_norms[i] if i < len(s.grad_norms) else None for i in indices))
                  for s in training.steps]
        out.append((layer, median(totals)))
    return out


def _show(what: str) -> str:
    return "The loss" if what == "the loss" else f"The gradient of `{what}`"


def _diagnostic(trace: Trace, training: TrainingTrace, kind: str, severity: str, names: tuple[str, ...],
                message: str) -> Diagnostic:
    return Diagnostic(kind, severity, training.line, source_line(trace, training.line), names, message)
