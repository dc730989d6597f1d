"""Compare a custom Function's backward with finite differences, on float64 copies, unseen by the cell.

This calls the Function's forward again (twice per input element, plus twice) and its backward once,
with one random ``grad_output``: both sides are vector-Jacobian products, so a backward that forgets
``grad_output`` is caught as well as one that misses a factor (a mismatch is measured once more with a
``grad_output`` of ones, whose numbers are plain derivatives). Everything it could change is put back:
torch's CPU generator (and each forward starts from the same state, so a forward that draws random
numbers is compared with itself), Python's and NumPy's generators and grad mode; what it prints or
warns is dropped, and user modes and subclasses see none of it (`quiet`).
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..trace.events import GradcheckEvent, GradcheckMismatch, Site
from .reads import quiet

EPS = 1e-6  # the step of the central differences (torch.autograd.gradcheck's default)
ATOL = 1e-5  # tolerances as torch.autograd.gradcheck's; ATOL scales with the outputs' size
RTOL = 1e-3
SHOWN = 4  # elements of each gradient written into the diagnostic
TIME_LIMIT_S = 5.0  # per Function and call site


@dataclass
class Argument:
    """One argument of ``apply(...)`` as copied at call time: a float64 clone, another tensor's clone, a constant."""

    position: int
    value: Any
    differentiable: bool = False  # a floating tensor that required grad in the cell


class Skip(Exception):
    """Why this call could not be checked (said as a note, never a warning)."""


def compare(cls: type, arguments: list[Argument], kwargs: dict[str, Any], name: str, site: Site,
            parameters: list[str]) -> GradcheckEvent:
    """The event for one Function call: its backward matched finite differences, did not, or was not checked."""
    labels = tuple(_label(a.position, parameters) for a in arguments if a.differentiable)
    try:
        with quiet():  # even reading where the copies live is not for a user mode to see
            devices = _cuda_devices(arguments)
        with _isolated(devices) as states:
            mismatches = _Comparison(cls, arguments, kwargs, states).run(parameters)
    except Skip as skip:
        return GradcheckEvent(name, site, "skipped", str(skip), checked=labels)
    except Exception as error:  # the Function's own limits on copies (a value-dependent shape, ...)
        return GradcheckEvent(name, site, "skipped", f"re-running it on float64 copies raised {_brief(error)}",
                              checked=labels)
    return GradcheckEvent(name, site, "mismatch" if mismatches else "ok", mismatches=mismatches, checked=labels)


@contextlib.contextmanager
def _isolated(cuda: list[int]) -> Iterator[_States]:
    """Run the re-check with every generator, grad mode, output and warning filter put back afterwards."""
    numpy = sys.modules.get("numpy")
    python_state = random.getstate()
    numpy_state = numpy.random.get_state() if numpy is not None else None
    try:
        with torch.random.fork_rng(devices=cuda), torch.enable_grad(), quiet(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield _States(torch.default_generator.get_state(), {d: torch.cuda.get_rng_state(d) for d in cuda})
    finally:
        random.setstate(python_state)
        if numpy is not None and numpy_state is not None:
            numpy.random.set_state(numpy_state)


def _cuda_devices(arguments: list[Argument]) -> list[int]:
    """The CUDA devices the copies live on (their generators are forked too); other accelerators are not checked."""
    devices = {a.value.device for a in arguments if isinstance(a.value, torch.Tensor)}
    if any(d.type not in ("cpu", "cuda") for d in devices):
        raise Skip("its inputs are on " + ", ".join(sorted({d.type for d in devices})) + "; only CPU and CUDA "
                   "tensors are checked")
    return sorted({d.index if d.index is not None else torch.cuda.current_device() for d in devices
                   if d.type == "cuda"})


@dataclass
class _States:
    """The random states every forward starts from: a forward that draws random numbers is compared with itself."""

    cpu: torch.Tensor
    cuda: dict[int, torch.Tensor]

    def restore(self) -> None:
        torch.default_generator.set_state(self.cpu)
        for device, state in self.cuda.items():
            torch.cuda.set_rng_state(state, device)


class _Comparison:
    def __init__(self, cls: type, arguments: list[Argument], kwargs: dict[str, Any], state: _States) -> None:
        self.cls = cls
        self.arguments = arguments
        self.kwargs = kwargs
        self.state = state
        self.picked: list[int] = []  # positions of the differentiable outputs among the floating ones
        self.deadline = time.monotonic() + TIME_LIMIT_S

    def outputs(self, values: list[Any]) -> list[torch.Tensor]:
        """The floating outputs of one forward; every forward starts from the same random state."""
        self.state.restore()
        args = [v.clone() if isinstance(v, torch.Tensor) else v for v in values]  # a forward may write its input
        try:
            result = self.cls.apply(*args, **self.kwargs)  # type: ignore[attr-defined]
        except Exception as error:
            raise Skip(f"its forward raised {_brief(error)} when called again on float64 copies") from None
        flat = result if isinstance(result, (tuple, list)) else (result,)
        return [o for o in flat if isinstance(o, torch.Tensor) and o.is_floating_point()]

    def run(self, parameters: list[str]) -> tuple[GradcheckMismatch, ...]:
        """Mismatches with a random grad_output (which catches a forgotten grad_output too); when a
        grad_output of ones shows the same inputs wrong, its numbers are the ones reported: they are the
        derivatives a learner computes by hand (12 for d/dx x**3 at 2), not scaled by a random number."""
        found = self.compared(parameters, unit=False)
        if found:
            try:
                unit = self.compared(parameters, unit=True)
            except Skip:  # out of time, say: the mismatch already found stands
                return found
            if [m.position for m in unit] == [m.position for m in found]:
                return unit
        return found

    def compared(self, parameters: list[str], unit: bool) -> tuple[GradcheckMismatch, ...]:
        leaves = [a.value.detach().requires_grad_() if a.differentiable else a.value for a in self.arguments]
        weights, analytic = self.analytic(leaves, unit)
        values = [a.value for a in self.arguments]
        found = []
        for index, argument in enumerate(self.arguments):
            if argument.differentiable:
                got = analytic.pop(0)
                bad = self.numerical(values, index, weights, got)
                if bad is not None:
                    found.append(_mismatch(argument.position, _label(argument.position, parameters), *bad, unit))
        return tuple(found)

    def analytic(self, leaves: list[Any], unit: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A grad_output for each differentiable output (random, or ones when ``unit``), and what the
        backward makes of it per input."""
        outs = self.outputs(leaves)
        self.picked = [i for i, o in enumerate(outs) if o.requires_grad]
        wanted = [leaf for leaf, a in zip(leaves, self.arguments, strict=True) if a.differentiable]
        if not self.picked:
            raise Skip("none of its outputs depends differentiably on its inputs")
        low = next((o.dtype for o in outs if o.requires_grad and o.dtype != torch.float64), None)
        if low is not None:
            raise Skip(f"its forward returned {str(low).replace('torch.', '')} for float64 inputs; finite "
                       "differences need double precision")
        generator = torch.Generator().manual_seed(0)  # our own: the cell's stream is not drawn from
        weights = [(torch.ones(outs[i].shape, dtype=torch.float64) if unit else
                    torch.randn(outs[i].shape, dtype=torch.float64, generator=generator)).to(outs[i].device)
                   for i in self.picked]
        try:
            grads = torch.autograd.grad([outs[i] for i in self.picked], wanted, weights, allow_unused=True)
        except Exception as error:
            raise Skip(f"its backward raised {_brief(error)} on float64 copies") from None
        return weights, [torch.zeros_like(w) if g is None else g.detach().reshape(w.shape)
                         for g, w in zip(grads, wanted, strict=True)]

    def project(self, values: list[Any], weights: list[torch.Tensor]) -> tuple[float, float]:
        """grad_output · forward(values), and the size it is made of (for the absolute tolerance)."""
        outs = self.outputs(values)
        if len(outs) <= max(self.picked):
            raise Skip("its forward returned a different number of outputs when called again")
        chosen = [outs[i] for i in self.picked]
        total = sum(float((o * w).sum()) for o, w in zip(chosen, weights, strict=True))
        return total, sum(float((o * w).abs().sum()) for o, w in zip(chosen, weights, strict=True))

    def numerical(self, values: list[Any], index: int, weights: list[torch.Tensor],
                  got: torch.Tensor) -> tuple[list[float], list[float], int, tuple[int, ...], bool] | None:
        """Central differences for one input, compared element by element; the mismatch, if any."""
        with torch.no_grad():
            flat = values[index].view(-1)
            base, size = self.project(values, weights)
            tolerance = ATOL * max(1.0, size)
            analytic = got.reshape(-1).tolist()
            expected, worst, excess = [], -1, 0.0
            for j in range(flat.numel()):
                if time.monotonic() > self.deadline:
                    raise Skip(f"comparing took longer than {TIME_LIMIT_S:g} s")
                numeric, ok = self.element(values, flat, j, weights, base, analytic[j], tolerance)
                expected.append(numeric)
                over = abs(analytic[j] - numeric) - tolerance - RTOL * abs(numeric)
                if not ok and over > excess:
                    worst, excess = j, over
        if worst < 0:
            return None
        flat_forward = all(abs(v) <= tolerance for v in expected)  # round, sign, a step: derivative 0 everywhere
        return expected, analytic, worst, _unravel(worst, tuple(values[index].shape)), flat_forward

    def element(self, values: list[Any], flat: torch.Tensor, j: int, weights: list[torch.Tensor],
                base: float, got: float, tolerance: float) -> tuple[float, bool]:
        """(the numerical derivative at element j, whether the backward's value agrees with it)."""
        original = float(flat[j])
        flat[j] = original + EPS
        above, _ = self.project(values, weights)
        flat[j] = original - EPS
        below, _ = self.project(values, weights)
        flat[j] = original
        numeric = (above - below) / (2 * EPS)
        if not all(math.isfinite(v) for v in (above, below, base, got)):
            return numeric, True  # not finite near here: nothing to compare
        if abs(got - numeric) <= tolerance + RTOL * abs(numeric):
            return numeric, True
        left, right = (base - below) / EPS, (above - base) / EPS
        kink = abs(left - right) > tolerance + RTOL * max(abs(left), abs(right))
        # at a kink (relu at 0, sort at a tie) any value between the one-sided slopes is a valid gradient
        return numeric, kink and min(left, right) - tolerance <= got <= max(left, right) + tolerance


def _mismatch(position: int, name: str, expected: list[float], got: list[float], worst: int,
              index: tuple[int, ...], flat: bool, unit: bool) -> GradcheckMismatch:
    return GradcheckMismatch(position, name, index, tuple(expected[:SHOWN]), tuple(got[:SHOWN]),
                             expected[worst], got[worst], len(expected), unit, flat)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, rest = divmod(flat, size)
        index.append(rest)
    return tuple(reversed(index))


def _label(position: int, parameters: list[str]) -> str:
    return parameters[position] if position < len(parameters) else f"input {position}"


def _brief(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__
