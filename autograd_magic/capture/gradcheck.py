"""--gradcheck: note each custom ``autograd.Function`` the cell calls, then check its backward after the cell.

``Function.apply`` does not go through torch-function handling, but the ops inside the Function's
forward do: when the recorder records one of them (its first calls per site, with --gradcheck on
only), the stack holds the forward's frame, which tells the class and its arguments (compat.py:
from ``apply``'s frame where torch's apply is Python, else from the forward's parameters), and above
it the line that called it. Once per class and call site, the small inputs are copied then, as
detached float64 clones (nothing of the user's is kept); after the cell, `check_calls` runs the
forward again on the copies and compares the backward with finite differences (finitediff.py).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch

from ..trace.events import GradcheckEvent, Site
from .compat import apply_arguments, function_of_forward
from .finitediff import Argument, compare
from .reads import attempt, is_plain, profiling, quiet
from .sites import SiteTable

MAX_ELEMENTS = 1000  # tensor elements per call, all inputs together: bigger calls are not copied
MAX_FRAMES = 64  # how far up from an op the forward's frame is looked for
_CONSTANTS = (type(None), bool, int, float, complex, str, torch.dtype, torch.device, torch.layout,
              torch.memory_format)
_BASE_SETUP_CONTEXT = torch.autograd.Function.setup_context  # not overridden: an old-style forward takes ctx
_TORCH_MODULES = ("torch.", "functorch.")  # torch's own Functions (checkpoint, ...) are not the user's
_TORCH_EXAMPLES = "torch.testing."  # ... but the ones its tests define as examples are


@dataclass
class FunctionCall:
    """One (class, call site): the copied arguments, or why they were not copied."""

    cls: type
    site: Site
    arguments: list[Argument] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


class FunctionCalls:
    """The custom Functions a cell called, noted from the stack of the ops their forward ran."""

    def __init__(self, sites: SiteTable) -> None:
        self.sites = sites
        self.calls: dict[tuple[type, Site], FunctionCall] = {}

    def note(self, frame: FrameType | None) -> None:
        """``frame`` ran a recorded op: if it is inside a Function's forward, note that call once."""
        forward, cls = _forward_frame(frame)
        if forward is None or cls is None or _is_torchs_own(cls):
            return
        site = self.sites.site(self.sites.user_frame_from(forward.f_back))
        if (cls, site) in self.calls:
            return  # a loop calls it again: checked once per class and call site
        call = self.calls[(cls, site)] = FunctionCall(cls, site)
        if profiling():  # a profiler would see our copies
            call.reason = "a profiler was recording when it was called, and it would have seen the inputs copied"
            return
        with quiet():
            call.reason = _copy(*apply_arguments(forward, cls), call)

    def check(self, skip: str = "") -> tuple[GradcheckEvent, ...]:
        """Compare each noted Function's backward with finite differences (after the cell: calls forward again).

        ``skip``: why no Function may be called now (each is then reported as not checked).
        """
        events = []
        for call in self.calls.values():
            name = call.cls.__qualname__
            if call.reason or skip:
                events.append(GradcheckEvent(name, call.site, "skipped", call.reason or skip))
            else:
                events.append(compare(call.cls, call.arguments, call.kwargs, name, call.site,
                                      _parameter_names(call.cls)))
        self.calls.clear()  # the copies and classes go now
        return tuple(events)


def _is_torchs_own(cls: type) -> bool:
    module = getattr(cls, "__module__", None) or ""
    return module.startswith(_TORCH_MODULES) and not module.startswith(_TORCH_EXAMPLES)


def _forward_frame(frame: FrameType | None) -> tuple[FrameType | None, type | None]:
    for _ in range(MAX_FRAMES):
        if frame is None:
            break
        cls = function_of_forward(frame)
        if cls is not None:
            return frame, cls
        frame = frame.f_back
    return None, None


def _copy(args: tuple[Any, ...], kwargs: dict[str, Any], call: FunctionCall) -> str:
    """Fill ``call`` with copies of the arguments; returns why they cannot be checked ("" when they can)."""
    if kwargs:
        return "it was called with keyword arguments, which --gradcheck does not replay"
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if not tensors:
        return "it was called with no tensor argument"
    total = sum(attempt(a.numel, MAX_ELEMENTS + 1) for a in tensors)
    if total > MAX_ELEMENTS:
        return f"its tensor inputs have {total:,} elements (--gradcheck copies at most {MAX_ELEMENTS:,})"
    for position, value in enumerate(args):
        if isinstance(value, torch.Tensor):
            argument = _copy_tensor(value, position)
            if isinstance(argument, str):
                return argument
            call.arguments.append(argument)
        elif isinstance(value, _CONSTANTS) or _is_constant_tuple(value):
            call.arguments.append(Argument(position, value))
        else:
            return (f"argument {position} is a {type(value).__name__}, which --gradcheck does not copy "
                    "(only tensors and plain numbers, strings, dtypes)")
    if not any(a.differentiable for a in call.arguments):
        return "none of its floating-point inputs required grad in the cell"
    return ""


def _copy_tensor(value: torch.Tensor, position: int) -> Argument | str:
    if not is_plain(value):
        return f"argument {position} is a tensor subclass or a special tensor, which --gradcheck does not copy"
    if attempt(value.is_complex, True):
        return f"argument {position} is complex; --gradcheck compares real gradients only"
    floating = attempt(value.is_floating_point, False)
    try:
        copy = value.detach().to(torch.float64 if floating else value.dtype, copy=True)
    except Exception as error:  # an odd device or dtype costs only this check
        return f"argument {position} could not be copied ({type(error).__name__})"
    return Argument(position, copy.contiguous(), differentiable=floating and bool(value.requires_grad))


def _is_constant_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, _CONSTANTS) for v in value)


def _parameter_names(cls: type) -> list[str]:
    """The forward's parameter names for apply's arguments (without ``ctx`` for old-style forwards)."""
    try:
        names = list(inspect.signature(cls.forward).parameters)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return []
    new_style = getattr(cls, "setup_context", None) != _BASE_SETUP_CONTEXT
    return names if new_style else names[1:]
