"""The tiny TorchFunctionMode behind `Recorder`: call first, then hand over to record.

This is the hot path. A call from an instruction seen before costs one frame
lookup, one dict lookup and a counter update; only the first calls per site
are described in detail (by the recorder, inside a guard).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from types import CodeType, FrameType, FunctionType, TracebackType
from typing import Any, Protocol

from torch.overrides import TorchFunctionMode

from .. import internal
from .backward import BACKWARD_FUNCS, BackwardRecorder
from .compat import (
    accesses_attribute,
    getframe,
    is_compiling,
    len_function_stack,
    pop_function_stack,
    push_function_stack,
    unseen_backward,
)


class Recorder(Protocol):
    """What the mode needs from the recorder that owns it (see recorder.Recorder)."""

    counts: dict[tuple[Any, ...], int]
    max_repeats: int
    backward: BackwardRecorder

    def record(self, func: Any, args: tuple[Any, ...], kwargs: Any, result: Any,
               error: BaseException | None, caller: FrameType) -> None: ...

    def absorb_counts(self, sites: dict[tuple[int, int], list[Any]]) -> None: ...

    def is_user_code(self, code: CodeType) -> bool: ...


@functools.lru_cache(maxsize=1024)  # keyed by file name: cells come and go, so the cache is bounded
def _is_wrapper_file(filename: str) -> bool:
    return filename.endswith(_WRAPPER_FILES)


def _is_wrapper(code: CodeType) -> bool:
    return _is_wrapper_file(code.co_filename)


def leave_mode(mode: RecordingMode, recorder: Recorder, on_stack: bool = True) -> None:
    """Take our mode off the torch-function stack, keeping any the cell left above it.

    ``on_stack`` False: an optimizer step took it off already (and raised before putting it back).
    """
    try:
        if on_stack:
            _pop_ours(mode)
    finally:
        mode.recorder = None  # break the cycle
        recorder.absorb_counts(mode.sites)
        mode.sites.clear()  # the call functions hold the user's globals
        mode._located.clear()


def _pop_ours(mode: RecordingMode) -> None:
    above = []
    while len_function_stack() > 0:
        top = pop_function_stack()
        if top is mode:
            break
        above.append(top)
    else:
        internal.report_failure("our mode was not on the stack")
    for other in reversed(above):
        push_function_stack(other)


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
        # (id(code), instruction) -> [call, calls so far, code]; the code is kept to tell a reused id apart
        self.sites: dict[tuple[int, int], list[Any]] = {}
        self._located: dict[tuple[int, int], tuple[CodeType, Callable[..., Any]]] = {}

    def located_call(self, frame: FrameType) -> Callable[..., Any]:
        """`make_call`, cached per instruction (Python-dispatched calls never reach the fast path)."""
        key = (id(frame.f_code), frame.f_lasti)
        found = self._located.get(key)
        if found is None or found[0] is not frame.f_code:
            found = self._located[key] = (frame.f_code, self.make_call(frame))
        return found[1]

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
        if kwargs is None:
            kwargs = {}
        if is_compiling():  # first, and reading nothing of ours: Dynamo would guard on it and recompile
            return func(*args, **kwargs)
        try:
            here = getframe(1)
            code = here.f_code
            site = self.sites.get((id(code), here.f_lasti))  # by id: hashing a code object costs its whole length
            if site is None or site[2] is not code:  # first call from here, Python dispatch wrappers, a backward
                return self.first_call(func, args, kwargs, here)
            try:  # the fast path: a call site seen before (the sites are cleared when the recorder leaves)
                result = site[0](func, args, kwargs)
            except BaseException as failure:
                self.record(func, args, kwargs, None, failure, here)
                raise
            seen = site[1]
            site[1] = seen + 1
            if seen < self.max_repeats:
                self.record(func, args, kwargs, result, None, here)
            return result
        except BaseException as error:
            # sys.last_traceback keeps this frame: it must not keep the user's tensors, nor show our frames
            del args, kwargs, func, types
            raise error.with_traceback(without_own_frames(error.__traceback__))  # noqa: B904 - the same error

    def record(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any,
               error: BaseException | None, here: FrameType) -> None:
        if self.recorder is not None:
            self.recorder.record(func, args, kwargs, result, error, here)

    def first_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], here: FrameType) -> Any:
        __tracebackhide__ = True  # noqa: F841
        rec = self.recorder
        if rec is None:
            return func(*args, **kwargs)
        if func in BACKWARD_FUNCS:  # backward is Python code: its call sites never reach `sites`
            # called from the user's line, so warnings raised in backward with a stacklevel land there
            user = _dispatching_function(here).f_back if _is_wrapper(here.f_code) else here
            return rec.backward.run(func, args, kwargs, self.located_call(user) if user else _call_directly)
        unseen = unseen_backward(here)
        if unseen is not None:  # older torch: torch.autograd.backward reaches us only through its helpers
            rec.backward.notice(unseen)
            return func(*args, **kwargs)  # not cached: each such call may start another backward
        if _is_descriptor(func) and not (rec.is_user_code(here.f_code) and accesses_attribute(here)):
            # torch's C++ sets and reads attributes through Python while it may hold a lock on the
            # tensor (autograd.Function.apply with mark_dirty): reading that tensor then would deadlock.
            # Where apply is C++ itself, the innermost Python frame is the user's, at the call to apply:
            # only an attribute instruction there is the user's own access.
            # Library code's own attribute reads (an optimizer's p.grad) are not the user's either:
            # later calls from here take the fast path, never recorded (their count starts past the cap)
            self.sites[(id(here.f_code), here.f_lasti)] = [_call_directly, _NEVER_RECORDED, here.f_code]
            return func(*args, **kwargs)
        return self.call_slowly(here, func, args, kwargs)

    def call_slowly(self, here: FrameType, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The general path: counts by (caller, func) and makes the per-site call function."""
        __tracebackhide__ = True  # noqa: F841
        rec = self.recorder
        assert rec is not None
        wrapped = _is_wrapper(here.f_code)
        caller = _caller(here) if wrapped else here
        # A C function warns from the innermost Python frame: the call must look like ``here``'s line. A
        # Python-dispatched function (F.softmax) runs again under us and warns with a stacklevel that, in a
        # plain run, lands on whoever called it: the call must look like that caller's line.
        user = _dispatching_function(here).f_back if wrapped else None
        call = self.located_call(user) if user is not None else self.make_call(here)
        try:
            result = call(func, args, kwargs)
        except BaseException as error:
            rec.record(func, args, kwargs, None, error, caller)
            raise
        key = (id(caller.f_code), caller.f_lasti, func)
        seen = self.counts.get(key, 0)
        self.counts[key] = seen + 1
        if not wrapped:  # later calls from this instruction take the fast path, counting there
            self.sites[(id(here.f_code), here.f_lasti)] = [call, seen + 1, here.f_code]
        if seen < self.max_repeats:
            rec.record(func, args, kwargs, result, None, caller)
        return result


_NEVER_RECORDED = 1 << 62  # a call count past any max_repeats


def _is_descriptor(func: Any) -> bool:
    """A property's getter or setter (``Tensor.grad.__get__``), as torch-function handling sees it."""
    return getattr(func, "__name__", "") in ("__get__", "__set__", "__delete__")


def without_own_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback with autograd_magic's frames (and our per-site call functions) left out."""
    kept = []
    while tb is not None:
        if not _is_own_code(tb.tb_frame.f_code):
            kept.append(tb)
        tb = tb.tb_next
    for outer, inner in zip(kept, kept[1:], strict=False):
        outer.tb_next = inner
    if kept:
        kept[-1].tb_next = None
    return kept[0] if kept else None


def _is_own_code(code: CodeType) -> bool:
    if code.co_filename.startswith(_PACKAGE_DIR):
        return True
    return code.co_code == _CALL_TEMPLATE.co_code and code.co_varnames == _CALL_TEMPLATE.co_varnames


def _call_directly(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    __tracebackhide__ = True  # noqa: F841
    return func(*args, **kwargs)


# one line, so every instruction carries the caller's line number once co_firstlineno is replaced
_CALL_SOURCE = "def _call(func, args, kwargs): __tracebackhide__ = True; return func(*args, **kwargs)"
_CALL_TEMPLATE = next(c for c in compile(_CALL_SOURCE, "<autograd_magic>", "exec").co_consts if isinstance(c, CodeType))



def _dispatching_function(frame: FrameType) -> FrameType:
    """The frame of the Python torch function that handed its call to torch-function handling."""
    while frame.f_code.co_filename.endswith(_OVERRIDES) and frame.f_back is not None:
        frame = frame.f_back
    return frame


def _caller(frame: FrameType) -> FrameType:
    """The frame that made the call, skipping torch's Python dispatch wrappers."""
    while _is_wrapper(frame.f_code) and frame.f_back is not None:
        frame = frame.f_back
    return frame


_OVERRIDES = os.path.join("torch", "overrides.py")
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_WRAPPER_FILES = (os.path.join("torch", "overrides.py"), os.path.join("torch", "_tensor.py"),
                  os.path.join("torch", "_jit_internal.py"), os.path.join("torch", "functional.py"))
