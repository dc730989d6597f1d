"""Every read of user state goes through here, so that the cell cannot see it.

The rules, from PyTorch's own debugging modes:
- read with torch-function and Python-dispatch handling turned off (`quiet`), so no
  user mode, tensor subclass or profiler sees a call it would not see in a plain run;
- prefer metadata to data; touch data only of small, plain, strided tensors, and never
  copy a big one (norms are computed in the tensor's own dtype, fingerprints read the
  bytes in place);
- never unpack a saved tensor that a user hook packed (that would run the unpack hook,
  or recompute a checkpointed forward);
- every read is guarded: a read that raises costs only that detail.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from .compat import (
    NOT_AVAILABLE,
    NOT_AVAILABLE_TEXT,
    DisableTorchDispatch,
    DisableTorchFunction,
    base_of_view,
    foreach_copy_,
    foreach_norm,
    foreach_sub_,
    is_functorch_wrapped,
    is_zero_tensor,
    profiler_enabled,
    raw_saved,
    saved_slot_names,
    saved_unpack_hook,
    set_grad_enabled,
    sparse_values,
    unpacked_saved,
    version_of,
)

T = TypeVar("T")
FULL_VALUES_LIMIT = 1000  # elements: larger tensors are summarised, not listed
FINGERPRINT_LIMIT = 32 * 1024  # bytes: values of larger tensors are not compared
MAX_SPARSE_VALUES = 1_000_000  # stored values of a sparse gradient we still coalesce for its norm
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_NORM_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
                          torch.complex128})
_REAL_NORM_DTYPES = _NORM_DTYPES - {torch.complex64, torch.complex128}


class quiet:  # noqa: N801 - used like a function: `with quiet():`
    """Reads inside see no torch-function or dispatch handling: user modes and subclasses stay unaware.

    A small class rather than a generator context manager: it is entered on every recorded call.
    """

    __slots__ = ("_function", "_dispatch")

    def __enter__(self) -> None:
        self._function = DisableTorchFunction()
        self._dispatch = DisableTorchDispatch()
        self._function.__enter__()
        self._dispatch.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._dispatch.__exit__(*exc)
        self._function.__exit__(*exc)


class quiet_no_grad(quiet):  # noqa: N801 - used like a function
    """`quiet`, with autograd recording off too: for reads whose ops would otherwise record a graph
    (a norm of a parameter). Two C calls instead of ``torch.no_grad()``'s Python context manager, which
    cost as much as a small norm at every step of a training loop."""

    __slots__ = ("_grad",)

    def __enter__(self) -> None:
        super().__enter__()
        self._grad = torch.is_grad_enabled()
        set_grad_enabled(False)

    def __exit__(self, *exc: Any) -> None:
        set_grad_enabled(self._grad)
        super().__exit__(*exc)


def attempt(read: Callable[[], T], default: T) -> T:
    """``read()``, or ``default`` when it raises: one odd tensor costs only its own detail."""
    try:
        return read()
    except Exception:  # anything a tensor subclass, a lazy parameter or a freed node may raise
        return default


def is_plain(t: torch.Tensor) -> bool:
    """A tensor whose data we may touch: an ordinary strided tensor, not a subclass, wrapper or fake."""
    if type(t) not in _PLAIN:
        return False
    return attempt(lambda: _plain_data(t), False)


def _plain_data(t: torch.Tensor) -> bool:
    """`is_plain` for a tensor of a plain type, unguarded: for callers that guard a whole block."""
    return (t.layout == torch.strided and not t.is_nested and not t.is_meta and not is_functorch_wrapped(t)
            and not _is_uninitialized(t) and not is_zero_tensor(t))


def _is_uninitialized(t: torch.Tensor) -> bool:
    return isinstance(t, _UNINITIALIZED)


_UNINITIALIZED: Any = getattr(torch.nn.parameter, "UninitializedTensorMixin", ())  # LazyLinear's weight


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    """The shape, or () when the tensor has none to give (nested, uninitialized)."""
    return attempt(lambda: tuple(int(s) for s in t.shape), ())


def byte_span(t: torch.Tensor) -> tuple[int, int] | None:
    """The bytes ``t``'s elements occupy, from its metadata: equal for a tensor and its transposes."""
    def read() -> tuple[int, int] | None:
        if t.numel() == 0:
            return None
        start = t.data_ptr()
        reach = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride(), strict=True))
        return (start, start + (reach + 1) * t.element_size()) if start else None
    return attempt(read, None) if is_plain(t) else None


def fingerprint(t: torch.Tensor) -> tuple[tuple[int, int], int, bytes] | None:
    """(byte span, version, digest) of a small CPU tensor's bytes, read in place: notices writes autograd can't."""
    span = byte_span(t) if attempt(lambda: t.device.type == "cpu", False) else None
    if span is None or span[1] - span[0] > FINGERPRINT_LIMIT:
        return None
    try:
        raw = (ctypes.c_char * (span[1] - span[0])).from_address(span[0])
        return span, version_of(t), hashlib.blake2b(memoryview(raw), digest_size=8).digest()
    except (RuntimeError, ValueError, TypeError):
        return None


def profiling() -> bool:
    """A profiler is recording: it sees every aten op, ours too, so data reads wait or are left out."""
    return bool(attempt(profiler_enabled, True))


def small_values(t: torch.Tensor) -> Any:
    """Nested lists of a small real tensor's values; None for a big, complex or unusual one."""
    if profiling() or not is_plain(t) or attempt(lambda: t.numel() > FULL_VALUES_LIMIT or t.is_complex(), True):
        return None
    with quiet():
        return attempt(lambda: t.detach().cpu().tolist(), None)


def norm_of(t: torch.Tensor) -> float | None:
    """The 2-norm in the tensor's own dtype (no float64 copy); complex magnitudes count; None if not computable."""
    if profiling():
        return None
    with quiet_no_grad():
        if attempt(lambda: t.layout == torch.sparse_coo, False):
            return attempt(lambda: _sparse_norm(t), None)
        if attempt(lambda: is_zero_tensor(t), False):
            return 0.0
        if not is_plain(t) or attempt(lambda: t.dtype not in _NORM_DTYPES, True):
            return None  # complex32 would make torch warn "experimental" into the user's cell
        if attempt(lambda: t.numel() == 0, False):
            return 0.0
        return attempt(lambda: float(torch.linalg.vector_norm(t.detach())), None)


def summary_of(t: torch.Tensor, listed: int, summarised: int) -> tuple[tuple[int, ...], Any, float | None,
                                                                       float | None, float | None] | None:
    """(shape, values, norm, min, max) of a real tensor in one quiet read: the values of one with at most
    ``listed`` elements, else norm/min/max (in its own dtype, one read back), only the shape past
    ``summarised`` elements. None while a profiler records or for a tensor whose data we may not touch.

    One guarded block instead of a read per number: this runs for every recorded op and backward step.
    """
    if type(t) not in _PLAIN:
        return None
    with quiet():  # no no_grad: every op below reads a detached tensor, so none records a graph
        try:
            if profiler_enabled() or not _plain_data(t):
                return None
            shape = tuple(t.shape)
            count = t.numel()
            dtype = t.dtype
            if count > summarised or dtype.is_complex:
                return shape, None, None, None, None
            data = t.detach()
            if count <= listed:  # empty ones too
                return shape, data.cpu().tolist(), None, None, None
            low, high = torch.aminmax(data)
            if dtype not in _REAL_NORM_DTYPES:  # integers: their extremes, no norm
                lo, hi = torch.stack((low, high)).tolist()
                return shape, None, None, float(lo), float(hi)
            norm = torch.linalg.vector_norm(data)
            nr, lo, hi = torch.stack((norm, low, high)).tolist()
            return shape, None, nr, lo, hi
        except Exception:  # a subclass's or a backend's own limits: this detail is left out
            return None


def scalar_of(t: torch.Tensor) -> float | None:
    """The value of a one-element real tensor (a loss), read in place; None for anything else."""
    if type(t) not in _PLAIN:
        return None
    with quiet():  # one guarded block: it runs at every step of a training loop. No no_grad: detached
        try:
            if profiler_enabled() or t.numel() != 1 or not _plain_data(t) or t.is_complex():
                return None
            return float(t.detach())
        except Exception:
            return None


def scalars_of(tensors: list[torch.Tensor]) -> list[float | None]:
    """`scalar_of` for many one-element tensors: one stacked read back (per tensor when that fails)."""
    with quiet_no_grad():
        try:
            if profiler_enabled():
                return [None] * len(tensors)
            if all(type(t) in _PLAIN and _plain_data(t) and not t.is_complex() for t in tensors):
                stacked = torch.stack([t.reshape(()) for t in tensors])
                return [float(v) for v in stacked.double().tolist()]
        except Exception:  # mixed devices or dtypes: one at a time below
            pass
    return [scalar_of(t) for t in tensors]


def norms_of(tensors: list[torch.Tensor | None], known: list[torch.Tensor] | None = None) -> tuple[float | None, ...]:
    """`norm_of` for many tensors at once: the plain ones in one ``_foreach_norm`` and one read back.

    ``known``: more tensors, already checked plain and real (our weight copies and the parameters they
    copy): their norms follow, without the per-tensor checks, which cost more than a small norm.
    Runs at every kept step of a training loop, where its own Python cost was half its time: the checks
    run in one guarded pass (per tensor only when one of them raises).
    """
    known = known or []
    every = tensors + known
    found: dict[int, float | None] = {}
    with quiet_no_grad():
        try:
            if profiler_enabled():
                return tuple(None for _ in every)
            batch = [*_batchable_indices(tensors), *range(len(tensors), len(every))]
            if len(batch) > 1:
                norms = list(foreach_norm([every[i] for i in batch]))
                if len({n.dtype for n in norms}) > 1:  # stack needs one dtype: f64 holds every float exactly
                    norms = [n.double() for n in norms]
                found = dict(zip(batch, torch.stack(norms).tolist(), strict=True))
        except Exception:  # mixed devices, an odd dtype: one at a time below
            found = {}
    return tuple(None if t is None else found[i] if i in found else norm_of(t) for i, t in enumerate(every))


def _batchable_indices(tensors: list[torch.Tensor | None]) -> list[int]:
    """Positions of the tensors `_batchable` accepts, checked in one guarded pass."""
    try:
        return [i for i, t in enumerate(tensors) if t is not None and type(t) in _PLAIN and _batchable_data(t)]
    except Exception:  # a lazy or exotic tensor: the others are still batched
        return [i for i, t in enumerate(tensors) if t is not None and _batchable(t)]


def copy_of(t: torch.Tensor, max_bytes: int) -> torch.Tensor | None:
    """Our own detached copy of a small plain float tensor (at most ``max_bytes``); None for any other."""
    if profiling() or not _batchable(t) or attempt(lambda: t.numel() * t.element_size() > max_bytes, True):
        return None
    with quiet_no_grad():
        return attempt(lambda: t.detach().clone(), None)


def copy_into(copies: list[torch.Tensor], tensors: list[torch.Tensor]) -> bool:
    """Refresh our copies from the tensors, in place (no allocation); False when it could not."""
    if profiling():
        return False
    with quiet_no_grad():
        try:
            foreach_copy_(copies, tensors)
            return True
        except Exception:  # a parameter whose shape, dtype or device changed: copies must be taken again
            return False


def subtract(copies: list[torch.Tensor], tensors: list[torch.Tensor]) -> bool:
    """``copies -= tensors`` in place, batched (our copies then hold what the tensors moved by, negated)."""
    if profiling():
        return False
    with quiet_no_grad():
        try:
            foreach_sub_(copies, tensors)
            return True
        except Exception:  # changed shapes or devices: the copies must be taken again
            return False


def _batchable(t: torch.Tensor) -> bool:
    return type(t) in _PLAIN and attempt(lambda: _batchable_data(t), False)


def _batchable_data(t: torch.Tensor) -> bool:
    """A real float strided tensor with elements (unguarded: the callers guard)."""
    return (t.layout == torch.strided and t.dtype in _REAL_NORM_DTYPES and t.numel() > 0
            and not is_zero_tensor(t) and not is_functorch_wrapped(t))


def _sparse_norm(t: torch.Tensor) -> float | None:
    if sparse_values(t).numel() > MAX_SPARSE_VALUES:  # coalescing copies the values: only while they are few
        return None
    return float(torch.linalg.vector_norm(t.detach().coalesce().values()))


def grad_of(t: torch.Tensor) -> torch.Tensor | None:
    """A leaf's ``.grad``; None for a non-leaf, whose ``.grad`` torch would warn about in the user's cell."""
    return attempt(lambda: t.grad if t.is_leaf else None, None)


def grad_fn_of(t: torch.Tensor) -> Any:
    return attempt(lambda: t.grad_fn, None)


def base_of(t: torch.Tensor) -> torch.Tensor | None:
    """The tensor ``t`` is a view of, if any."""
    return attempt(lambda: base_of_view(t), None)


def next_functions(node: Any) -> tuple[tuple[Any, int], ...]:
    return attempt(lambda: tuple(node.next_functions), ())


# -- what a node saved for backward ---------------------------------------------------------------
HIDDEN_BY_HOOKS = "kept by a saved_tensors_hooks (not unpacked, so your hooks run as they would)"
RECOMPUTED = "recomputed in backward (checkpoint)"
HOOKS_UNKNOWN = f"not read ({NOT_AVAILABLE_TEXT}: it cannot tell whether a hook packed it)"
_saved_names: dict[type, tuple[str, ...]] = {}


def saved_slots(node: Any) -> tuple[str, ...]:
    """The names of a node's saved tensors ('self', 'other', 'result', ...)."""
    names = _saved_names.get(type(node))
    if names is None:
        names = _saved_names[type(node)] = saved_slot_names(node)
    return names


def saved_tensor(node: Any, slot: str, made_under: Any = NOT_AVAILABLE) -> torch.Tensor | str | None:
    """What ``node`` saved as ``slot``: the tensor, or a sentence saying why it is not read.

    A tensor packed by a user's ``saved_tensors_hooks`` (checkpoint included) is never
    unpacked: that would call the user's unpack hook, or run the forward again. Where the
    handle does not tell its hook (older torch), ``made_under`` does: the unpack hook that was
    active when the op that made ``node`` ran (`compat.active_unpack_hook`), or NOT_AVAILABLE
    when that op was not seen: then nothing is unpacked.
    """
    try:
        raw = raw_saved(node, slot)
    except RuntimeError as error:
        return "modified in place" if "inplace" in str(error) else "freed"
    items = raw if isinstance(raw, (list, tuple)) else (raw,)
    for item in items:
        hook = saved_unpack_hook(item)
        if hook is NOT_AVAILABLE:
            hook = made_under
        if hook is NOT_AVAILABLE:  # unpacking might run a user's hook: we cannot tell, so we don't
            return HOOKS_UNKNOWN
        if hook is not None:
            return RECOMPUTED if "checkpoint" in getattr(hook, "__qualname__", "") else HIDDEN_BY_HOOKS
    if isinstance(raw, (list, tuple)):
        return None  # a list of tensors (index, a custom Function's): nothing more to say than its slot
    value = _unpacked(node, slot)
    return value if isinstance(value, (torch.Tensor, str)) else None


def saved_tensors(node: Any, slot: str) -> list[torch.Tensor]:
    """Every tensor ``node`` saved as ``slot`` (a list slot too); none when a user hook packed them, or
    when this torch cannot tell whether one did."""
    try:
        raw = raw_saved(node, slot)
    except RuntimeError:  # freed, or modified in place: nothing held any more, or nothing we may read
        return []
    items = raw if isinstance(raw, (list, tuple)) else (raw,)
    if any(saved_unpack_hook(item) is not None for item in items):  # NOT_AVAILABLE is not None either
        return []  # packed by the user's hook (or checkpoint): what it keeps is its own business
    value = _unpacked(node, slot)
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for t in value if isinstance(t, torch.Tensor)] if isinstance(value, (list, tuple)) else []


def _unpacked(node: Any, slot: str) -> Any:
    """The unpacked value of ``slot`` (a custom Function's ``saved_tensors``); only for slots no hook
    packed: unpacking then runs no user code."""
    try:
        return unpacked_saved(node, slot)
    except AttributeError:  # a custom Function's node has its tensors under a public name
        return attempt(lambda: node.saved_tensors, None) if slot == "tensors" else None
    except RuntimeError as error:
        return "modified in place" if "inplace" in str(error) else "freed"


StorageKey = tuple[int, int]  # (device index, -1 on the CPU; address) of a storage


def storage_key(t: torch.Tensor) -> StorageKey | None:
    """Where the storage under ``t`` starts, from metadata alone (no storage object is made): views of one
    storage share the key. Runs inside `quiet()` (a graph walk reads hundreds: one guard for all of them)."""
    if type(t) not in _PLAIN:
        return None
    try:
        if not _plain_data(t):
            return None
        address = t.data_ptr() - int(t.storage_offset()) * t.element_size()
        return (t.get_device(), address) if address else None
    except Exception:  # a backend without storages: this tensor's bytes are not counted
        return None


def storage_bytes(t: torch.Tensor) -> int:
    """The bytes of the whole storage under a tensor `storage_key` accepted (inside `quiet()`); 0 unknown."""
    return attempt(lambda: int(t.untyped_storage().nbytes()), 0)


def storage_of(t: torch.Tensor) -> tuple[StorageKey, int, int] | None:
    """(`storage_key`, the storage's bytes, the bytes ``t`` itself spans), read quietly; None for a tensor
    whose storage we may not touch."""
    with quiet():
        key = storage_key(t)
        size = storage_bytes(t) if key is not None else 0
        return (key, size, attempt(lambda: t.numel() * t.element_size(), 0)) if key is not None and size else None


def device_name(key: StorageKey) -> str:
    return "cpu" if key[0] < 0 else f"cuda:{key[0]}"


def memory_in_use(device: str) -> int | None:
    """Bytes the process holds on ``device``: the CUDA allocator's count, or the resident set on the CPU."""
    if device.startswith("cuda"):
        return attempt(lambda: int(torch.cuda.memory_allocated(device)), None)
    return attempt(_resident_bytes, None) if device == "cpu" else None


def _resident_bytes() -> int | None:
    """The resident set from /proc (Linux): ~10 us, and read only for graphs that keep much."""
    try:
        with open("/proc/self/statm", "rb") as stat:
            pages = int(stat.read().split()[1])
    except OSError:  # no /proc here
        return None
    return pages * _PAGE


_PAGE = attempt(lambda: os.sysconf("SC_PAGE_SIZE"), 4096)


# -- finiteness (the non-finite diagnostic) ---------------------------------------------------------
def all_finite(t: Any) -> bool | None:
    """True when every element of a plain floating tensor is finite; None when not read (not floating,
    not plain, a profiler records).

    One reduction and one read back: a finite sum means every element is finite (nan and ±inf
    survive any sum). Only a sum that overflowed (float16) needs the exact second look.
    """
    if type(t) not in _PLAIN:
        return None
    with quiet():  # no no_grad: the sum reads a detached tensor, so it records no graph
        try:
            if (profiler_enabled() or not t.is_floating_point() or not _plain_data(t)
                    or t.numel() == 0):
                return None if t.numel() else True
            data = t.detach()
            total = float(data.sum())
            if total - total == 0:
                return True
            return bool(torch.isfinite(data).all())
        except Exception:  # a backend or subclass limit: this output goes unchecked
            return None


def counts_of(t: Any) -> tuple[int, int, int, int, int, int, float | None, float | None, int] | None:
    """(elements, nan, +inf, -inf, zeros, negatives, finite min, finite max, |x| > 1) of a plain real
    tensor, for the rare op that made a non-finite value; None when it may not be read."""
    if type(t) not in _PLAIN:
        return None
    with quiet():
        try:
            if profiler_enabled() or not _plain_data(t) or t.is_complex() or t.dtype == torch.bool:
                return None
            data = t.detach()
            count = data.numel()
            if not data.is_floating_point():
                data = data.double()
            finite = data[torch.isfinite(data)]
            numbers = torch.stack([torch.isnan(data).sum(), (data == math.inf).sum(), (data == -math.inf).sum(),
                                   (data == 0).sum(), (data < 0).sum(), (finite.abs() > 1).sum()]).tolist()
            low, high = (None, None) if finite.numel() == 0 else (float(finite.min()), float(finite.max()))
            nan, posinf, neginf, zeros, negatives, outside = (int(n) for n in numbers)
            return count, nan, posinf, neginf, zeros, negatives, low, high, outside
        except Exception:  # this input's detail is left out
            return None
