"""Describe tensors and numpy arrays as plain `TensorInfo`/`GradValue` records.

Ids come from `Identity`, a map keyed by ``id()`` that holds only weak
references, so describing a tensor never keeps it alive.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch

from ..trace.events import GradValue, TensorInfo

try:  # numpy is optional for torch; describe arrays only when it is there
    import numpy as np
except ImportError:  # pragma: no cover - torch wheels ship with numpy here
    np = None  # type: ignore[assignment]

FULL_VALUES_LIMIT = 1000  # elements: larger gradients are summarised


class Identity:
    """Short, stable ids for objects, without keeping them alive."""

    def __init__(self) -> None:
        self._refs: dict[int, tuple[weakref.ref[Any], int]] = {}
        self._nodes: dict[int, tuple[int, str]] = {}  # autograd nodes cannot be weakly referenced
        self._by_tid: dict[int, weakref.ref[Any]] = {}
        self._next = 1

    def tid(self, obj: Any) -> int:
        entry = self._refs.get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        tid = self._next
        self._next += 1
        ref = weakref.ref(obj)
        self._refs[id(obj)] = (ref, tid)
        self._by_tid[tid] = ref
        return tid

    def alive(self, tid: int) -> bool:
        return self.get(tid) is not None

    def get(self, tid: int) -> Any:
        """The object with this id, or None once it died."""
        ref = self._by_tid.get(tid)
        return None if ref is None else ref()

    def known(self, obj: Any) -> int | None:
        entry = self._refs.get(id(obj))
        return entry[1] if entry is not None and entry[0]() is obj else None

    def live(self) -> dict[int, Any]:
        """tid -> object for every object still alive."""
        out = {}
        for ref, tid in self._refs.values():
            obj = ref()
            if obj is not None:
                out[tid] = obj
        return out

    def node(self, node: Any) -> int:
        # An address can be reused once a node dies; the class name catches most reuse.
        label = type(node).__name__
        entry = self._nodes.get(id(node))
        if entry is not None and entry[1] == label:
            return entry[0]
        nid = self._next
        self._next += 1
        self._nodes[id(node)] = (nid, label)
        return nid

    def clear(self) -> None:
        self._refs.clear()
        self._by_tid.clear()
        self._nodes.clear()


def is_array(obj: object) -> bool:
    return np is not None and isinstance(obj, np.ndarray)


def tensor_memory(t: torch.Tensor) -> tuple[int, int] | None:
    if type(t) not in _PLAIN and (t.is_meta or _is_fake(t)):
        return None
    try:
        storage = t.untyped_storage()
        start = storage.data_ptr()
        return (start, start + storage.nbytes()) if start else None
    except (RuntimeError, NotImplementedError, TypeError):
        return None  # sparse, nested and other tensors without plain storage


def array_memory(arr: Any) -> tuple[int, int] | None:
    base = arr
    while isinstance(getattr(base, "base", None), np.ndarray):
        base = base.base
    start = base.__array_interface__["data"][0]
    return (start, start + base.nbytes) if start else None


def _is_fake(t: torch.Tensor) -> bool:
    return type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter) and hasattr(t, "fake_mode")


def describe(obj: Any, ids: Identity) -> TensorInfo | None:
    """A `TensorInfo` for a tensor or array, None for anything else."""
    if isinstance(obj, torch.Tensor):
        return describe_tensor(obj, ids)
    if is_array(obj):
        return TensorInfo(
            tid=ids.tid(obj),
            kind="ndarray",
            shape=tuple(obj.shape),
            dtype=str(obj.dtype),
            memory=array_memory(obj),
        )
    return None


def describe_tensor(t: torch.Tensor, ids: Identity) -> TensorInfo:
    grad_fn = t.grad_fn
    dtype = _dtype_names.get(t.dtype)
    if dtype is None:
        dtype = _dtype_names[t.dtype] = str(t.dtype).removeprefix("torch.")
    device = t.device
    device_name = _device_names.get(device)
    if device_name is None:
        device_name = _device_names[device] = str(device)
    return TensorInfo(
        tid=ids.tid(t),
        kind="tensor",
        shape=tuple(t.shape),
        dtype=dtype,
        device=device_name,
        requires_grad=t.requires_grad,
        is_leaf=t.is_leaf,
        grad_fn=None if grad_fn is None else type(grad_fn).__name__,
        node=None if grad_fn is None else ids.node(grad_fn),
        memory=tensor_memory(t),
        version=_version(t),
    )


_PLAIN = (torch.Tensor, torch.nn.Parameter)
_dtype_names: dict[torch.dtype, str] = {}
_device_names: dict[torch.device, str] = {}


def _version(t: torch.Tensor) -> int:
    try:
        return int(t._version)
    except (RuntimeError, AttributeError):
        return 0


def plain_values(t: torch.Tensor) -> Any:
    """Nested lists of a small tensor's values, None for a large one."""
    if t.numel() > FULL_VALUES_LIMIT or t.is_meta or _is_fake(t):
        return None
    values = t.detach().to("cpu")
    if values.is_complex():
        values = values.abs()
    return values.tolist()


def grad_value(grad: torch.Tensor, before: Any = None, source: str = "leaf") -> GradValue:
    norm = float("nan")
    if not (grad.is_meta or _is_fake(grad)):
        with torch.no_grad():
            norm = float(grad.detach().double().norm()) if grad.numel() else 0.0
    if math.isnan(norm) and grad.numel() == 0:
        norm = 0.0
    return GradValue(shape=tuple(grad.shape), values=plain_values(grad), norm=norm, before=before, source=source)


FINGERPRINT_LIMIT = 4096  # elements: values of larger tensors are not compared


def fingerprint_key(t: torch.Tensor) -> tuple[int, tuple[int, ...], int] | None:
    """(data pointer, shape, version): identifies one state of a tensor's values."""
    if type(t) not in _PLAIN or t.device.type != "cpu" or t.numel() > FINGERPRINT_LIMIT or t.is_sparse:
        return None
    try:
        return (t.data_ptr(), tuple(t.shape), int(t._version))
    except RuntimeError:
        return None


def fingerprint(t: torch.Tensor) -> int | None:
    """A hash of a small CPU tensor's bytes, to notice writes autograd cannot see."""
    try:
        return hash(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    except (RuntimeError, TypeError, ValueError):
        return None
