"""Every version-sensitive touch of torch's and Python's internals, in one place.

The recorder leans on internals that move between releases: the torch-function mode stack, the
dispatch guards, raw saved-tensor handles, ``Function.apply``'s frame, frame and code-object details.
Each is looked up here once, by feature detection (``getattr``, a probe call in a guard), never by
comparing version numbers, and each has a named fallback the callers consume: where torch does not
offer something, the answer is `NOT_AVAILABLE` ("not available on this torch"), never a guess.

No other module of the package reads a private name: ``tests/test_compat.py`` scans the source and
fails when one appears outside this module, or when this module uses one not listed in `INTERNALS`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

import torch

# name -> why we touch it; the scan test keeps this list equal to the private names used below
INTERNALS: dict[str, str] = {
    "_C": "torch's C extension: the torch-function stack, dispatch guards, grad mode, tensor kinds",
    "_len_torch_function_stack": "how many torch-function modes are active (ours must leave its place)",
    "_pop_torch_function_stack": "take our mode off the stack, keeping the cell's own modes above it",
    "_push_on_torch_function_stack": "put modes back on the stack",
    "_get_function_stack_at": "which mode is on top (an optimizer step steps out only under ours)",
    "_DisableTorchDispatch": "reads that Python dispatch modes and subclasses must not see",
    "_set_grad_enabled": "grad mode off and on in one C call each (torch.no_grad costs as much as a read)",
    "_is_zerotensor": "an efficient zero tensor has no storage to read",
    "_functorch": "functorch's wrapped tensors have no data of their own to read",
    "_autograd": "torch._C._autograd: the profiler flag",
    "_profiler_enabled": "a profiler sees every aten op, ours too: data reads wait while it records",
    "_dynamo": "Dynamo's is_compiling, when torch.compiler has none",
    "_foreach_norm": "many norms in one kernel (a training loop's gradient norms)",
    "_foreach_copy_": "refresh many weight copies in one kernel",
    "_foreach_sub_": "many differences in one kernel",
    "_values": "a sparse tensor's stored values (coalescing copies them: only while few)",
    "_base": "the tensor a view looks into",
    "_version": "a tensor's version counter (in-place writes bump it)",
    "_raw_saved_": "a node's saved tensor as a handle, not unpacked (prefix of the attribute names)",
    "_saved_": "a node's saved tensor, unpacked (prefix: read only when no hook packed it)",
    "_input_metadata": "the shape and dtype of the tensor a node produced",
    "_forward_cls": "the custom autograd.Function class behind a node or a ctx",
    "_getframe": "sys._getframe: the caller's frame, on the hot path (inspect costs far more)",
    "_set_running_loop": "asyncio's running-loop slot: run a top-level await on a loop of our own",
    "_actions": "argparse's option actions: the magic's statement after its options",
}


class _NotAvailable:
    """What torch does not offer: the caller says so rather than guess."""

    _instance: _NotAvailable | None = None

    def __new__(cls) -> _NotAvailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_AVAILABLE"

    def __bool__(self) -> bool:
        return False


NOT_AVAILABLE: Any = _NotAvailable()
NOT_AVAILABLE_TEXT = "not available on this torch"


def _lookup(owner: Any, name: str, default: Any = None) -> Any:
    """``owner.name``, or ``default`` when this torch has no such attribute (or the owner is missing)."""
    try:
        return getattr(owner, name)
    except Exception:  # a lazily imported submodule may raise anything on first touch
        return default


_C: Any = torch._C
_AUTOGRAD: Any = _lookup(_C, "_autograd")

# -- Python ------------------------------------------------------------------------------------
getframe: Callable[[int], FrameType] = sys._getframe


def positions(code: CodeType) -> list[tuple[int | None, int | None, int | None, int | None]]:
    """(line, end line, column, end column) per code unit (``f_lasti // 2``); columns need Python 3.11+."""
    if hasattr(code, "co_positions"):
        return list(code.co_positions())
    found: list[tuple[int | None, int | None, int | None, int | None]] = []
    for start, end, line in code.co_lines():  # Python 3.10: lines only
        found.extend([(line, line, None, None)] * ((end - start) // 2))
    return found


def instruction_index(lasti: int) -> int:
    """A frame's ``f_lasti`` (a byte offset since Python 3.10) as an index into `positions`."""
    return lasti // 2


_set_running_loop: Callable[[Any], None] | None = _lookup(asyncio.events, "_set_running_loop")


def set_running_loop(loop: Any) -> bool:
    """Set this thread's running event loop; False when this Python has no way to (then don't)."""
    if _set_running_loop is None:
        return False
    _set_running_loop(loop)
    return True


def parser_actions(parser: Any) -> tuple[Any, ...]:
    """argparse's actions of a parser (its options), or () for anything else."""
    return tuple(_lookup(parser, "_actions", ()) or ())


# -- the torch-function mode stack ---------------------------------------------------------------
len_function_stack: Callable[[], int] = _C._len_torch_function_stack
pop_function_stack: Callable[[], Any] = _C._pop_torch_function_stack
push_function_stack: Callable[[Any], None] = _C._push_on_torch_function_stack
function_stack_at: Callable[[int], Any] = _C._get_function_stack_at


def function_stack() -> Iterator[Any]:
    """The active torch-function modes, innermost last."""
    for index in range(len_function_stack()):
        yield function_stack_at(index)


# -- quiet reads ------------------------------------------------------------------------------------
class _Nothing:
    """A context manager that does nothing: the fallback for a guard this torch lacks."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


DisableTorchFunction: Callable[[], Any] = _lookup(_C, "DisableTorchFunction", _Nothing)
DisableTorchDispatch: Callable[[], Any] = _lookup(_C, "_DisableTorchDispatch", _Nothing)
set_grad_enabled: Callable[[bool], Any] = _lookup(_C, "_set_grad_enabled", None) or torch.set_grad_enabled
is_zero_tensor: Callable[[torch.Tensor], bool] = _lookup(_C, "_is_zerotensor", lambda t: False)
is_functorch_wrapped: Callable[[torch.Tensor], bool] = _lookup(
    _lookup(_C, "_functorch"), "is_functorch_wrapped_tensor", lambda t: False)
# without the flag we cannot tell: say "recording", so data reads wait (a profiler would see them)
profiler_enabled: Callable[[], bool] = _lookup(_AUTOGRAD, "_profiler_enabled", None) or (lambda: True)


def _dynamo_is_compiling() -> Callable[[], bool]:
    # Dynamo folds torch.compiler.is_compiling to True while it traces, with no guard
    found = _lookup(_lookup(torch, "compiler"), "is_compiling")
    if found is None:
        found = _lookup(_lookup(torch, "_dynamo"), "is_compiling")
    return found if found is not None else (lambda: False)


is_compiling: Callable[[], bool] = _dynamo_is_compiling()


# -- batched kernels (one kernel for many tensors; a loop where torch lacks them) ----------------------
def _foreach_norm_loop(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.linalg.vector_norm(t) for t in tensors]


def _foreach_copy_loop(copies: list[torch.Tensor], tensors: list[torch.Tensor]) -> None:
    for copy, tensor in zip(copies, tensors, strict=True):
        copy.copy_(tensor)


def _foreach_sub_loop(copies: list[torch.Tensor], tensors: list[torch.Tensor]) -> None:
    for copy, tensor in zip(copies, tensors, strict=True):
        copy.sub_(tensor)


foreach_norm: Callable[[list[torch.Tensor]], Any] = _lookup(torch, "_foreach_norm", _foreach_norm_loop)
foreach_copy_: Callable[[list[torch.Tensor], list[torch.Tensor]], Any] = _lookup(
    torch, "_foreach_copy_", _foreach_copy_loop)
foreach_sub_: Callable[[list[torch.Tensor], list[torch.Tensor]], Any] = _lookup(
    torch, "_foreach_sub_", _foreach_sub_loop)


# -- tensors ------------------------------------------------------------------------------------------
def version_of(t: torch.Tensor) -> int:
    """The tensor's version counter (raises like any read: callers guard)."""
    return int(t._version)


def base_of_view(t: torch.Tensor) -> torch.Tensor | None:
    """The tensor ``t`` is a view of, or None (raises like any read: callers guard)."""
    return t._base


def sparse_values(t: torch.Tensor) -> torch.Tensor:
    """A sparse COO tensor's stored values, without coalescing (raises like any read: callers guard)."""
    return t._values()


# -- custom autograd.Functions ---------------------------------------------------------------------------
def _apply_code() -> CodeType | None:
    apply = _lookup(torch.autograd.Function, "apply")
    code = _lookup(_lookup(apply, "__func__"), "__code__")
    return code if isinstance(code, CodeType) else None


# Function.apply's code, while apply is Python (a classmethod); None where torch made it a C++ builtin
APPLY_CODE: CodeType | None = _apply_code()


# -- autograd nodes -----------------------------------------------------------------------------------
def input_metadata(node: Any) -> Any:
    """(shape, dtype) of the tensor ``node`` produced; None when it has none; `NOT_AVAILABLE` when this
    torch does not say (a node without ``_input_metadata``)."""
    try:
        meta = node._input_metadata
    except AttributeError:
        return NOT_AVAILABLE
    except (RuntimeError, TypeError):
        return None
    try:
        if not meta:
            return None
        return tuple(meta[0].shape), meta[0].dtype
    except (AttributeError, RuntimeError, IndexError, TypeError):
        return None


def forward_class(node_or_ctx: Any) -> type | None:
    """The custom ``autograd.Function`` behind a node (``CubeBackward``) or a forward's ``ctx``."""
    try:
        found = node_or_ctx._forward_cls
    except Exception:  # a C++ node, a freed one
        return None
    return found if isinstance(found, type) else None


# -- what a node saved for backward ---------------------------------------------------------------------
_RAW = "_raw_saved_"
_UNPACKED = "_saved_"


def saved_slot_names(node: Any) -> tuple[str, ...]:
    """The names of a node's saved tensors ('self', 'other', 'result', ...)."""
    return tuple(a[len(_RAW):] for a in dir(node) if a.startswith(_RAW))


def raw_saved(node: Any, slot: str) -> Any:
    """The saved-tensor handle(s) of ``slot``, not unpacked (raises RuntimeError once freed)."""
    return getattr(node, _RAW + slot)


def unpacked_saved(node: Any, slot: str) -> Any:
    """The saved value of ``slot``, unpacked: runs an unpack hook, so only where none was registered."""
    return getattr(node, _UNPACKED + slot)


def saved_unpack_hook(handle: Any) -> Any:
    """The unpack hook registered on a saved-tensor handle: None when it has none, `NOT_AVAILABLE` when
    this torch does not say (then unpacking could run a user's hook: callers must not)."""
    if not _handles_tell_hooks(type(handle)):
        return NOT_AVAILABLE
    try:
        return handle.unpack_hook
    except Exception:  # a freed handle
        return None


_tells_hooks: dict[type, bool] = {}


def _handles_tell_hooks(kind: type) -> bool:
    known = _tells_hooks.get(kind)
    if known is None:
        known = _tells_hooks[kind] = hasattr(kind, "unpack_hook")
    return known
