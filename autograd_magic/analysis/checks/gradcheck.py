"""--gradcheck: a custom autograd.Function whose backward disagrees with finite differences."""

from __future__ import annotations

from ...report.model import Diagnostic
from ...trace.events import GradcheckEvent, GradcheckMismatch, Trace
from ..lineage import describe_names
from ..naming import Names

_HOW = "its forward was run again on float64 copies of the inputs, after the cell"


def check_gradcheck(trace: Trace, names: Names) -> list[Diagnostic]:
    """A warning per mismatching Function and call site; notes for what passed or could not be checked."""
    if trace.gradchecks is None:
        return []  # the option was off
    if not trace.gradchecks:
        return [Diagnostic("gradcheck", "note", None, "", (),
                           "--gradcheck found no custom autograd.Function call to check: the cell called none "
                           "(or none whose forward ran a torch operation).")]
    return [_diagnostic(event) for event in trace.gradchecks]


def _diagnostic(event: GradcheckEvent) -> Diagnostic:
    site, name = event.site, event.function
    if event.status == "mismatch" and all(m.flat for m in event.mismatches):
        return Diagnostic("gradcheck", "note", site.line, site.code, (name,), _surrogate_message(event))
    if event.status == "mismatch":
        return Diagnostic("gradcheck", "warning", site.line, site.code, (name,), _mismatch_message(event))
    if event.status == "ok":
        return Diagnostic("gradcheck", "note", site.line, site.code, (name,),
                          f"--gradcheck: the backward of `{name}` matches finite differences for "
                          f"{_listed(event.checked)} ({_HOW}).")
    return Diagnostic("gradcheck", "note", site.line, site.code, (name,),
                      f"--gradcheck could not check `{name}`: {event.reason}.")


def _surrogate_message(event: GradcheckEvent) -> str:
    """A forward that is flat where it was called (round, sign, a threshold) has derivative 0 there: a
    backward that sends something else is a surrogate gradient, usually on purpose (straight-through)."""
    name = event.function
    wrong = [m.name for m in event.mismatches]
    lines = [f"--gradcheck: `{name}`'s forward is flat around these inputs (finite differences give 0 for "
             f"{_listed(wrong)}, as for round, sign or a threshold), while its backward sends a gradient: "
             f"a surrogate gradient such as a straight-through estimator. That is fine if you meant it; "
             f"if not, the true gradient here is 0."]
    lines += [_compared(m) for m in event.mismatches]
    return "\n".join(lines)


def _mismatch_message(event: GradcheckEvent) -> str:
    name = event.function
    call = f"`{event.site.expr}`" if event.site.expr else "this call"
    wrong = [m.name for m in event.mismatches]
    unit = all(m.unit for m in event.mismatches)
    used = "a grad_output of ones, as y.sum().backward() gives" if unit else "the same random grad_output"
    lines = [f"{call} uses the custom autograd.Function `{name}`, whose backward does not match finite "
             f"differences for {_listed(wrong)}: the gradients it returns are wrong ({_HOW}; both sides "
             f"use {used})."]
    lines += [_compared(m) for m in event.mismatches]
    inputs = ", ".join(f"d/d {m.name} (the value at position {m.position} of backward's return)"
                       for m in event.mismatches)
    lines.append(f"Fix: check the backward of `{name}`: {inputs} must be grad_output times the derivative of "
                 f"forward's output with respect to that input. A missing factor, a forgotten grad_output or a "
                 f"wrong sign gives exactly this; `torch.autograd.gradcheck({name}.apply, inputs)` on double "
                 f"inputs checks it in isolation. (A backward that returns another gradient on purpose, as a "
                 f"gradient-reversal layer does, differs from finite differences by design.)")
    return "\n".join(lines)


def _compared(mismatch: GradcheckMismatch) -> str:
    at = f"{mismatch.name}[{', '.join(map(str, mismatch.index))}]" if mismatch.index else mismatch.name
    expected, got = _numbers(mismatch.expected, mismatch.elements), _numbers(mismatch.got, mismatch.elements)
    return (f"  {mismatch.name}: expected {expected} (finite differences), got {got} (backward); "
            f"most off at {at}: {mismatch.worst_expected:.4g} vs {mismatch.worst_got:.4g}")


def _numbers(values: tuple[float, ...], elements: int) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + (", ...]" if elements > len(values) else "]")


def _listed(words: tuple[str, ...] | list[str]) -> str:
    return describe_names(words) or "its inputs"
