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

The loop (`loop`): when an optimizer steps a second time, the loop's body has run whole once (its first
step recorded with its in-place updates) and its next forward and backward were recorded (what the checks
between two backward calls need: a missing ``zero_grad``, a tensor saved by one graph and updated before the
next). That step's pre-hook takes our mode off and leaves it off: the step itself and the rest of the running
top-level statement (the training loop's later iterations, forward and backward included) run unwatched, at
plain speed. (So does any library step past a class's `RECORDED_STEPS`.) The recorder puts the
mode back before the cell's next top-level statement (`resume`), at the depth it was taken from. Each
unwatched step's pre-hook hands over to ``on_unwatched`` (the recorder keeps the step's loss and gradient
norms). ``loop=False`` (``--every-step``) keeps the step-by-step way: only the step's own calls go unseen.

Never stepped out of: a step given a closure (LBFGS: the closure is the user's forward and backward),
an optimizer whose ``step`` is not torch's own code (the user's, in this cell or an earlier one, or a
third party's that may call back into the user's), a step while someone else's mode is above ours (it
must keep seeing the calls in the order it would), while Dynamo traces. A step that raises never
reaches its post-hook: the next step's pre-hook, or the end of the cell, puts the mode back.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import weakref
from collections.abc import Callable
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
    """The global optimizer step hooks that take ``mode`` off the stack during a library step, or for the
    rest of a loop once its steps were recorded (``loop``)."""

    def __init__(self, mode: TorchFunctionMode, max_repeats: int, loop: bool = False,
                 on_leave: Callable[[], None] | None = None, on_unwatched: Callable[[], None] | None = None) -> None:
        self._mode = mode
        self._recorded = min(RECORDED_STEPS, max_repeats)
        self._steps: dict[type, int] = {}  # steps seen per library optimizer class
        # optimizers seen stepping (a loop's come round), by id: a set would call the user's __hash__/__eq__
        self._stepped: dict[int, weakref.ref[Any]] = {}
        self._handles: list[Any] = []
        # the thread whose stack our mode is off (the stack is per thread; the step hooks are global,
        # so another thread's steps call them too), or None
        self._suspended_in: int | None = None
        self._depth = 0  # where on the stack our mode was when taken off
        self._loop = loop
        self._on_leave = on_leave  # called as the loop is left, while the last recorded step's values live
        self._on_unwatched = on_unwatched  # called before each step of a loop left
        self._out_of_loop = False  # off the stack until `resume`, not only during one step
        self.stepped_out = 0  # steps run without our mode
        self.steps = 0  # steps seen, recorded or not
        self.left_after: int | None = None  # steps seen when the first loop was left
        self.unwatched_loop_steps = 0  # steps run while a loop was left: their whole iteration unwatched

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

    @property
    def out_of_loop(self) -> bool:
        return self._out_of_loop

    def close(self) -> bool:
        """Remove our hooks; True when our mode is still off the stack (a step raised and the cell ended)."""
        suspended, self._suspended_in, self._out_of_loop = self.suspended, None, False
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        return suspended

    def resume(self) -> None:
        """Between two top-level statements: a loop left is over, our mode goes back where it was."""
        if self._out_of_loop:
            self._out_of_loop = False
            self._resume()

    def _before_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            if is_compiling():
                return
            self.steps += 1
            if self._out_of_loop and self._suspended_in == threading.get_ident():
                self.stepped_out += 1
                self.unwatched_loop_steps += 1
                if self._on_unwatched is not None:
                    self._on_unwatched()
                return
            self._resume()  # a step that raised never reached its post-hook
            if self._suspended_in is None and self._may_step_out(optimizer, args, kwargs):
                self._step_out()
                self.stepped_out += 1
                if self._loop:  # the last recorded iteration: its forward and backward were seen, the rest is not
                    self._leave_loop()
        except Exception:
            internal.report_failure("stepping out of an optimizer step")

    def _after_step(self, optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            if is_compiling() or self._out_of_loop:
                return
            self._resume()
        except Exception:
            internal.report_failure("stepping back in after an optimizer step")

    def _leave_loop(self) -> None:
        """Stay off the stack after this step (already stepped out of), until `resume`."""
        self._out_of_loop = True
        if self.left_after is None:
            self.left_after = self.steps
        if self._on_leave is not None:
            self._on_leave()

    def _step_out(self) -> None:
        self._depth = len_function_stack() - 1
        pop_function_stack()
        self._suspended_in = threading.get_ident()

    def _resume(self) -> None:
        """Put our mode back, on the stack it was taken from (never on another thread's), below any mode
        the cell entered since and left open."""
        if self._suspended_in is not None and self._suspended_in == threading.get_ident():
            self._suspended_in = None
            above = [pop_function_stack()
                     for _ in range(max(0, len_function_stack() - self._depth))]
            push_function_stack(self._mode)
            for other in reversed(above):
                push_function_stack(other)

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
        if seen < self._recorded and not (self._loop and self._came_round(optimizer)):
            return False
        depth = len_function_stack()
        return depth > 0 and function_stack_at(depth - 1) is self._mode

    def _came_round(self, optimizer: Any) -> bool:
        """This optimizer has stepped before in this cell: the loop's body ran whole once and its next
        forward and backward were recorded; the loop is left at this step (`_leave_loop`)."""
        seen = self._stepped.get(id(optimizer))
        if seen is not None and seen() is optimizer:
            return True
        with contextlib.suppress(TypeError):  # no weak reference: left by the class's count alone
            self._stepped[id(optimizer)] = weakref.ref(optimizer)
        return False

    def _is_library_step(self, kind: type) -> bool:
        step = inspect.unwrap(getattr(kind, "step", None))  # type: ignore[arg-type]
        code = getattr(step, "__code__", None)
        return isinstance(code, CodeType) and code.co_filename.startswith(_TORCH_DIR)
