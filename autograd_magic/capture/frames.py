"""The variables of the user's live function frames: names for what a script's ``main()`` or a cell's
``def train():`` holds only in its locals (a model, an optimizer, the loss), which the namespace never sees.

Read only at the moments the namespace is read (naming modules on a miss, a detailed backward call, a
loop's unwatched step), never per op; only frames of user code, with torch-function and dispatch handling
off, guarded; the copy is the caller's to drop, so nothing is kept by us. A global of the same name wins.
Reading is all we do (on 3.13 ``f_locals`` is a write-through proxy; see compat.frame_locals).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from .. import internal
from .compat import frame_local, frame_locals
from .reads import quiet

MAX_FRAMES = 200  # looked at per read: deeper recursion in user code is not where a model is built


def user_locals(frame: FrameType | None, is_user_code: Callable[[CodeType], bool],
                namespace: dict[str, Any]) -> dict[str, Any]:
    """name -> value for the locals of the user function frames from ``frame`` outwards, less the names the
    namespace holds, private ones and ``self``. Outer frames first, and they win: ``main()``'s ``model``
    names what a helper gets as a parameter, and a user ``forward``'s ``self`` names nothing."""
    found: dict[str, Any] = {}
    try:
        with quiet():
            for scope in reversed([frame_locals(f) for f in _user_functions(frame, is_user_code)]):
                for name, value in scope.items():
                    if not name.startswith("_") and name != "self" and name not in namespace:
                        found.setdefault(name, value)
    except Exception:  # a frame that cannot be read costs only its names
        internal.report_failure("reading the locals of the user's functions")
    return found


def user_local(frame: FrameType | None, is_user_code: Callable[[CodeType], bool], name: str) -> Any:
    """What ``name`` holds in the innermost user function frame from ``frame`` outwards that has it, else None."""
    try:
        with quiet():
            for found in _user_functions(frame, is_user_code):
                code = found.f_code
                if name in code.co_varnames or name in code.co_cellvars:
                    value = frame_local(found, name)
                    if value is not None:
                        return value
    except Exception:
        internal.report_failure("reading a local of the user's functions")
    return None


def _user_functions(frame: FrameType | None, is_user_code: Callable[[CodeType], bool]) -> list[FrameType]:
    """The frames of user functions from ``frame`` outwards, innermost first: the cell's (or the script's)
    module frame is left out, its variables are the namespace itself."""
    frames = []
    for _ in range(MAX_FRAMES):
        if frame is None:
            break
        if frame.f_code.co_flags & inspect.CO_OPTIMIZED and is_user_code(frame.f_code):
            frames.append(frame)
        frame = frame.f_back
    return frames
