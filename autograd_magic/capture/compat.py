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
import dis
import inspect
import sys
import weakref
from collections.abc import Callable, Hashable, Iterator
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
    "_top_saved_tensors_default_hooks": "the saved_tensors_hooks active when an op saves (where handles don't say)",
    "_execution_engine": "the autograd engine: a callback when a backward the mode did not see is done",
    "_sequence_nr": "a node's creation number: its identity where torch does not keep its wrapper alive",
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


_CO_OPTIMIZED = inspect.CO_OPTIMIZED  # a function's code: its variables live in the frame, not in a dict


def frame_locals(frame: FrameType) -> dict[str, Any]:
    """A plain copy of a function frame's variables, read only, leaving the frame holding nothing more.

    On 3.13+ ``f_locals`` is a write-through proxy (PEP 667): copying it writes nothing. Before, reading it
    fills a snapshot dict that lives on the frame (what ``locals()`` in that frame returns) and would keep
    the values it saw alive until the function returns: a training step's tensors. So the snapshot is
    emptied again after the copy; the frame's own variables are not in it and are untouched, and the next
    ``locals()`` (or debugger) fills it afresh.
    """
    variables = frame.f_locals
    copied = dict(variables)
    _drop_snapshot(frame, variables)
    return copied


def frame_local(frame: FrameType, name: str) -> Any:
    """One variable of a function frame, read only (no copy of the others: this runs once per loop step)."""
    variables = frame.f_locals
    value = variables.get(name)
    _drop_snapshot(frame, variables)
    return value


def _drop_snapshot(frame: FrameType, variables: Any) -> None:
    # only a function's snapshot: a module's or class body's f_locals is its real namespace, and a PEP 667
    # proxy (3.13+) would write through to the frame
    if type(variables) is dict and frame.f_code.co_flags & _CO_OPTIMIZED and variables is not frame.f_globals:
        variables.clear()


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


_ATTRIBUTE_OPS = frozenset({"LOAD_ATTR", "STORE_ATTR", "DELETE_ATTR", "LOAD_METHOD"})
# id(code) -> (the code, weakly; offsets of its attribute instructions)
_attribute_offsets: dict[int, tuple[weakref.ref[CodeType], frozenset[int]]] = {}


def accesses_attribute(frame: FrameType) -> bool:
    """The frame is at an attribute access of its own (``t.grad``, ``t.grad = g``), not at a call.

    A tensor property read or set through torch-function handling from a call instruction is not the
    frame's: C++ reached it from inside that call (``Function.apply`` marking a tensor dirty).
    """
    code = frame.f_code
    known = _attribute_offsets.get(id(code))
    if known is None or known[0]() is not code:
        offsets = frozenset(i.offset for i in dis.get_instructions(code) if i.opname in _ATTRIBUTE_OPS)
        known = _attribute_offsets[id(code)] = (weakref.ref(code), offsets)
        if len(_attribute_offsets) > 4096:  # cells come and go: forget the dead ones
            for key in [k for k, (ref, _) in _attribute_offsets.items() if ref() is None]:
                del _attribute_offsets[key]
    return frame.f_lasti in known[1]


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


# -- backward ------------------------------------------------------------------------------------------
_BACKWARD_CODE: CodeType | None = _lookup(torch.autograd.backward, "__code__")
# newer torch hands torch.autograd.backward to torch-function handling (as it always did autograd.grad)
BACKWARD_REACHES_TORCH_FUNCTION = _BACKWARD_CODE is None or "has_torch_function" in _BACKWARD_CODE.co_names
_engine: Any = _lookup(_lookup(torch.autograd, "Variable"), "_execution_engine")


def unseen_backward(frame: FrameType) -> FrameType | None:
    """Where torch.autograd.backward does not reach torch-function handling: its frame, when ``frame`` is
    it or a helper it called (they make torch-function calls before the engine starts); else None."""
    if BACKWARD_REACHES_TORCH_FUNCTION:
        return None
    if frame.f_code is _BACKWARD_CODE:
        return frame
    caller = frame.f_back
    return caller if caller is not None and caller.f_code is _BACKWARD_CODE else None


def queue_engine_callback(callback: Callable[[], None]) -> bool:
    """Have the running backward call ``callback`` once it is done; False when this torch cannot."""
    queue = _lookup(_engine, "queue_callback")
    if queue is None:
        return False
    queue(callback)
    return True


# -- custom autograd.Functions ---------------------------------------------------------------------------
def _apply_code() -> CodeType | None:
    apply = _lookup(torch.autograd.Function, "apply")
    code = _lookup(_lookup(apply, "__func__"), "__code__")
    return code if isinstance(code, CodeType) else None


# Function.apply's code, while apply is Python (a classmethod); None where torch made it a C++ builtin
APPLY_CODE: CodeType | None = _apply_code()
_BACKWARD_CTX: type = torch.autograd.function.BackwardCFunction  # the type of an old-style forward's ctx
# id(forward's code) -> (the code, the Function class running it, or None), both weakly: cells come and go
_forwards: dict[int, tuple[weakref.ref[CodeType], weakref.ref[type] | None]] = {}


def function_of_forward(frame: FrameType) -> type | None:
    """The custom ``autograd.Function`` whose ``forward`` ``frame`` runs, or None.

    Needs no frame of ``apply`` (a C++ builtin on newer torch): an old-style forward's ``ctx`` knows its
    class; a new-style one (``setup_context``) is found by its code among the Function subclasses. A
    forward that several classes share (inherited) is ambiguous: None.
    """
    code = frame.f_code
    if code.co_name != "forward":
        return None
    cls = _ctx_class(frame, code)
    if cls is not None:
        return cls
    known = _forwards.get(id(code))
    if known is None or known[0]() is not code:
        _index_forwards()
        known = _forwards.get(id(code))
        if known is None or known[0]() is not code:
            known = _forwards[id(code)] = (weakref.ref(code), None)
    return None if known[1] is None else known[1]()


def _ctx_class(frame: FrameType, code: CodeType) -> type | None:
    if code.co_argcount == 0:
        return None
    first = frame.f_locals.get(code.co_varnames[0])
    kind = type(first)  # no attribute of the user's object is read: only its type's
    if not issubclass(kind, _BACKWARD_CTX):
        return None
    cls = forward_class(kind)
    return cls if cls is not None and _forward_code(cls) is code else None


def _forward_code(cls: type) -> CodeType | None:
    code = _lookup(inspect.unwrap(_lookup(cls, "forward")), "__code__")
    return code if isinstance(code, CodeType) else None


def _index_forwards() -> None:
    """Map each Function subclass's forward code to its class (None where two classes share one)."""
    found: dict[int, tuple[CodeType, type | None]] = {}
    pending: list[type] = list(torch.autograd.Function.__subclasses__())
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        code = _forward_code(cls)
        if code is not None:
            earlier = found.get(id(code))
            found[id(code)] = (code, cls if earlier is None or earlier[1] is cls else None)
    for key in [k for k, (ref, _) in _forwards.items() if ref() is None]:
        del _forwards[key]  # codes of cells that are gone
    for key, (forward, owner) in found.items():
        _forwards[key] = (weakref.ref(forward), None if owner is None else weakref.ref(owner))


def apply_arguments(forward: FrameType, cls: type) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments ``cls.apply`` was called with: from apply's frame where apply is Python, else the
    forward's parameters as they are now (a forward that rebinds one before its first op shows that)."""
    apply = forward.f_back
    if APPLY_CODE is not None and apply is not None and apply.f_code is APPLY_CODE:
        scope = apply.f_locals
        return tuple(scope.get("args", ())), dict(scope.get("kwargs") or {})
    code = forward.f_code
    names = list(code.co_varnames[:code.co_argcount])
    if _ctx_class(forward, code) is not None:
        names = names[1:]  # old-style: ctx is not apply's
    scope = forward.f_locals
    args = [scope.get(name) for name in names]
    if code.co_flags & inspect.CO_VARARGS:
        args.extend(scope.get(code.co_varnames[code.co_argcount + code.co_kwonlyargcount], ()))
    return tuple(args), {}


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


def _node_wrappers_persist() -> bool:
    """Does torch keep a node's Python object alive as long as the node (so ``id(node)`` is its identity)?

    Where it does not, each ``t.grad_fn`` read after the last wrapper died makes a new one, often at a
    freed address: ids change for one node and repeat across nodes. Probed: drop the only wrapper, make
    others of the same type (one takes the freed memory), read the node again.
    """
    try:
        with DisableTorchFunction(), torch.enable_grad():
            leaf = torch.zeros(1, requires_grad=True)
            made = leaf * 2
            first = id(made.grad_fn)
            blockers = [(leaf * 3).grad_fn for _ in range(8)]
            again = id(made.grad_fn)
            del blockers
        return again == first
    except Exception:  # cannot tell: identify nodes by what torch keeps on them
        return False


NODE_WRAPPERS_PERSIST = _node_wrappers_persist()
_NO_SEQUENCE = (1 << 64) - 1  # the sequence number of nodes made outside a forward (AccumulateGrad)


def node_key(node: Any) -> Hashable:
    """A key that names one autograd node for as long as it lives, whatever torch does with its wrapper.

    ``id(node)`` where torch keeps the wrapper alive; else the node's type and creation number (numbers
    count per thread: nodes a CUDA backward makes with create_graph could share one with a forward's),
    and for a leaf's AccumulateGrad the leaf it holds.
    """
    if NODE_WRAPPERS_PERSIST:
        return id(node)
    try:
        number = node._sequence_nr()
    except Exception:  # not a node (a view's base tensor), or a torch without creation numbers
        return id(node)
    if number == _NO_SEQUENCE:
        variable = _lookup(node, "variable")
        return ("leaf", id(variable)) if isinstance(variable, torch.Tensor) else id(node)
    return (type(node).__name__, number)


def next_node_number() -> int | None:
    """The creation number the next node of this thread will get (makes and drops one tiny node), or None."""
    try:
        with DisableTorchFunction(), DisableTorchDispatch(), torch.enable_grad():
            node: Any = (torch.zeros((), requires_grad=True) * 1).grad_fn
            number = int(node._sequence_nr())
        return number + 1
    except Exception:
        return None


def key_sequence(key: Hashable) -> int | None:
    """The creation number inside a `node_key`, where the key is one (torch that does not keep wrappers)."""
    return key[1] if isinstance(key, tuple) and isinstance(key[1], int) and key[0] != "leaf" else None


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
# a saved-tensor handle says which unpack hook packed it (else: see `active_unpack_hook`)
SAVED_HANDLES_TELL_HOOKS = hasattr(_lookup(_AUTOGRAD, "SavedTensor"), "unpack_hook")
_top_saved_hooks: Callable[..., Any] | None = _lookup(_AUTOGRAD, "_top_saved_tensors_default_hooks")


def active_unpack_hook() -> Any:
    """The unpack hook of the innermost ``saved_tensors_hooks`` active now (what an op running now packs
    its saved tensors with): None when none is; `NOT_AVAILABLE` when this torch does not say."""
    if _top_saved_hooks is None:
        return NOT_AVAILABLE
    try:
        try:
            top = _top_saved_hooks(False)  # ignore_is_tracing
        except TypeError:  # a torch whose function takes no argument
            top = _top_saved_hooks()
    except Exception:
        return NOT_AVAILABLE
    return None if top is None else top[1]


def _handles_tell_hooks(kind: type) -> bool:
    known = _tells_hooks.get(kind)
    if known is None:
        known = _tells_hooks[kind] = hasattr(kind, "unpack_hook")
    return known
