"""Stepping out of a library optimizer's ``step`` once its calls have been recorded.

A torch optimizer's step is torch's own code: per parameter it reads ``.grad`` and updates in
place, and each of those calls would pass through our mode (the cost any torch-function mode pays,
and our fast path on top). In a training loop that is most of the calls the mode sees. The first
`RECORDED_STEPS` steps of each optimizer class are recorded like any call (their in-place updates are
listed at the user's ``opt.step()`` line, and the checks that look between two backward calls see
an update); later ones run with our mode off the torch-function stack, at plain speed. An error
caused by a later step still names its line (checks/inplace.py prints torch's own versions then).
torch's global step hooks are the way out and back in: the pre-hook takes our mode off the stack,
the post-hook puts it back.

Never stepped out of: a step given a closure (LBFGS: the closure is the user's forward and backward),
an optimizer whose ``step`` is not torch's own code (the user's, in this cell or an earlier one, or a
third party's that may call back into the user's), a step while someone else's mode is above ours (it
must keep seeing the calls in the order it would), while Dynamo traces. A step that raises never
reaches its post-hook: the next step's pre-hook, or the end of the cell, puts the mode back.
"""

from __future__ import annotations

import inspect
import os
import threading
from types import CodeType
from typing import Any

import torch
from torch.optim import optimizer as _optimizer
from torch.overrides import TorchFunctionMode

from .. import internal
from .compat import function_stack_at, is_compiling, len_function_stack, pop_function_stack, push_function_stack

_register_pre = getattr(_optimizer, "register_optimizer_step_pre_hook", None)
_register_post = getattr(_optimizer, "register_optimizer_step_post_hook", None)
RECORDED_STEPS = 2  # per torch optimizer class (at most the recorder's max_repeats): torch's code, alike every step
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep  # only torch's own optimizers step out


class StepOut:
    """The global optimizer step hooks that take ``mode`` off the stack during a library step."""

    def __init__(self, mode: TorchFunctionMode, max_repeats: int) -> None:
        self._mode = mode
        self._recorded = min(RECORDED_STEPS, max_repeats)
        self._steps: dict[type, int] = {}  # steps seen per library optimizer class
        self._handles: list[Any] = []
        # the thread whose stack our mode is off (the stack is per thread; the step hooks are global,
        # so another thread's steps call them too), or None
        self._suspended_in: int | None = None
        self.stepped_out = 0  # steps run without our mode

    def start(self) -> None:
        if _register_pre is None or _register_post is None:
            return  # an old torch without global step hooks: every step is recorded
        try:
            self._handles = [_register_pre(self._before_step), _register_post(self._after_step)]
        except Exception:
            internal.report_failure("hooking optimizer steps")

    @property
    def suspended(self) -> bool:
        return self._suspended_in is not None

    def close(self) -> bool:
        """Remove our hooks; True when our mode is still off the stack (a step raised and the cell ended)."""
        suspended, self._suspended_in = self.suspended, None
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        return suspended

    def _before_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            if is_compiling():
                return
            self._resume()  # a step that raised never reached its post-hook
            if self._suspended_in is None and self._may_step_out(optimizer, args, kwargs):
                pop_function_stack()
                self._suspended_in = threading.get_ident()
                self.stepped_out += 1
        except Exception:
            internal.report_failure("stepping out of an optimizer step")

    def _after_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            if not is_compiling():
                self._resume()
        except Exception:
            internal.report_failure("stepping back in after an optimizer step")

    def _resume(self) -> None:
        """Put our mode back, on the stack it was taken from: never on another thread's."""
        if self._suspended_in is not None and self._suspended_in == threading.get_ident():
            self._suspended_in = None
            push_function_stack(self._mode)

    def _may_step_out(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if len(args) > 1 or kwargs.get("closure") is not None:
            return False  # the closure is the user's forward and backward
        kind = type(optimizer)
        seen = self._steps.get(kind)
        if seen is None:
            seen = 0 if self._is_library_step(kind) else -1
        if seen < 0:
            self._steps[kind] = seen
            return False  # the user's own step: always recorded
        self._steps[kind] = seen + 1
        if seen < self._recorded:
            return False
        depth = len_function_stack()
        return depth > 0 and function_stack_at(depth - 1) is self._mode

    def _is_library_step(self, kind: type) -> bool:
        step = inspect.unwrap(getattr(kind, "step", None))  # type: ignore[arg-type]
        code = getattr(step, "__code__", None)
        return isinstance(code, CodeType) and code.co_filename.startswith(_TORCH_DIR)
