"""The tiny TorchFunctionMode behind `Recorder`: call first, then hand over to record.

This is the hot path. A call from an instruction seen before costs one frame
lookup, one dict lookup and a counter update; only the first calls per site
are described in detail (by the recorder, inside a guard).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from types import CodeType, FrameType, FunctionType
from typing import Any, Protocol

import torch
from torch.overrides import TorchFunctionMode

from .. import internal
from .backward import BACKWARD_FUNCS, BackwardRecorder


class Recorder(Protocol):
    """What the mode needs from the recorder that owns it (see recorder.Recorder)."""

    counts: dict[tuple[Any, ...], int]
    max_repeats: int
    backward: BackwardRecorder

    def record(self, func: Any, args: tuple[Any, ...], kwargs: Any, result: Any,
               error: BaseException | None, caller: FrameType) -> None: ...

    def absorb_counts(self, sites: dict[tuple[CodeType, int], list[Any]]) -> None: ...

_compiler = torch.compiler  # its flag is read directly: calling is_compiling() costs ~0.5 us per op


@functools.lru_cache(maxsize=1024)  # keyed by file name: cells come and go, so the cache is bounded
def _is_wrapper_file(filename: str) -> bool:
    return filename.endswith(_WRAPPER_FILES)


def _is_wrapper(code: CodeType) -> bool:
    return _is_wrapper_file(code.co_filename)


def leave_mode(mode: RecordingMode, recorder: Recorder) -> None:
    """Take our mode off the torch-function stack, keeping any the cell left above it."""
    above = []
    try:
        while torch._C._len_torch_function_stack() > 0:
            top = torch._C._pop_torch_function_stack()
            if top is mode:
                break
            above.append(top)
        else:
            internal.report_failure("our mode was not on the stack")
        for other in reversed(above):
            torch._C._push_on_torch_function_stack(other)
    finally:
        mode.recorder = None  # break the cycle
        recorder.absorb_counts(mode.sites)
        mode.sites.clear()  # the call functions hold the user's globals


class RecordingMode(TorchFunctionMode):
    """Call the function, then hand the call to the recorder; nothing else.

    This is the hot path: a call site seen more than `max_repeats` times costs
    one frame lookup and one dict update, so loops stay cheap.
    """

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder: Recorder | None = recorder
        self.counts = recorder.counts  # held here too: one attribute lookup less per call
        self.max_repeats = recorder.max_repeats
        self.sites: dict[tuple[CodeType, int], list[Any]] = {}  # (code, instruction) -> [call, calls so far]

    def make_call(self, frame: FrameType) -> Callable[..., Any]:
        """A function that calls ``func`` from what looks like ``frame``'s line.

        Torch warns from C++ at the innermost Python frame. Without this that
        frame is ours, so a warning would name mode.py, and Python's
        once-per-location filter would merge warnings from different cells.
        Compiled with the caller's file, line and globals, warnings read and
        deduplicate exactly as in a plain run.
        """
        line = frame.f_lineno
        if line is None:
            return _call_directly
        code = _CALL_TEMPLATE.replace(co_filename=frame.f_code.co_filename, co_firstlineno=line,
                                      co_name=frame.f_code.co_name)
        return FunctionType(code, frame.f_globals)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        __tracebackhide__ = True  # noqa: F841 - tracebacks show the user's frames, not ours
        rec = self.recorder
        if kwargs is None:
            kwargs = {}
        if rec is None or _compiler._is_compiling_flag:
            return func(*args, **kwargs)
        here = sys._getframe(1)
        site = self.sites.get((here.f_code, here.f_lasti))
        if site is None:  # first call from here, torch's Python dispatch wrappers, or a backward
            if func in BACKWARD_FUNCS:  # backward is Python code: its call sites never reach `sites`
                return rec.backward.run(func, args, kwargs)
            return self.call_slowly(here, func, args, kwargs)
        try:
            result = site[0](func, args, kwargs)
        except BaseException as error:
            rec.record(func, args, kwargs, None, error, here)
            raise
        seen = site[1]
        site[1] = seen + 1
        if seen < self.max_repeats:
            rec.record(func, args, kwargs, result, None, here)
        return result

    def call_slowly(self, here: FrameType, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The general path: counts by (caller, func) and makes the per-site call function."""
        __tracebackhide__ = True  # noqa: F841
        rec = self.recorder
        assert rec is not None
        wrapped = _is_wrapper(here.f_code)
        # under torch's Python dispatch, func runs its own Python code first, which is where it warns
        # from in a plain run too: only a direct call from the caller's line needs a located call
        call = _call_directly if wrapped else self.make_call(here)
        caller = _caller(here) if wrapped else here
        try:
            result = call(func, args, kwargs)
        except BaseException as error:
            rec.record(func, args, kwargs, None, error, caller)
            raise
        key = (caller.f_code, caller.f_lasti, func)
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if not wrapped:  # later calls from this instruction take the fast path, counting there
            self.sites[(here.f_code, here.f_lasti)] = [call, seen + 1]
        if seen < self.max_repeats:
            rec.record(func, args, kwargs, result, None, caller)
        return result


def _call_directly(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    __tracebackhide__ = True  # noqa: F841
    return func(*args, **kwargs)


# one line, so every instruction carries the caller's line number once co_firstlineno is replaced
_CALL_SOURCE = "def _call(func, args, kwargs): __tracebackhide__ = True; return func(*args, **kwargs)"
_CALL_TEMPLATE = next(c for c in compile(_CALL_SOURCE, "<autograd_magic>", "exec").co_consts if isinstance(c, CodeType))



def _caller(frame: FrameType) -> FrameType:
    """The frame that made the call, skipping torch's Python dispatch wrappers."""
    while _is_wrapper(frame.f_code) and frame.f_back is not None:
        frame = frame.f_back
    return frame


_WRAPPER_FILES = (os.path.join("torch", "overrides.py"), os.path.join("torch", "_tensor.py"),
                  os.path.join("torch", "_jit_internal.py"), os.path.join("torch", "functional.py"))
