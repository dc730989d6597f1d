"""Describe tensors and numpy arrays as plain `TensorInfo`/`GradValue` records.

Ids come from `Identity`, a map keyed by ``id()`` that holds only weak
references, so describing a tensor never keeps it alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

import torch

from ..trace.events import GradValue, TensorInfo
from .compat import key_sequence, node_key, version_of
from .reads import attempt, grad_fn_of, is_plain, norm_of, quiet, shape_of, small_values

try:  # numpy is optional for torch; describe arrays only when it is there
    import numpy as np
except ImportError:  # pragma: no cover - torch wheels ship with numpy here
    np = None  # type: ignore[assignment]



class Identity:
    """Short, stable ids for objects, without keeping them alive."""

    def __init__(self) -> None:
        self._refs: dict[int, tuple[weakref.ref[Any], int]] = {}
        self._nodes: dict[Hashable, tuple[int, str]] = {}  # by compat.node_key: nodes cannot be weakly referenced
        self._sequence: dict[int, int] = {}  # nid -> creation number, where node keys hold one
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
        key = node_key(node)
        entry = self._nodes.get(key)
        if entry is not None and entry[1] == label:
            return entry[0]
        nid = self._next
        self._next += 1
        self._nodes[key] = (nid, label)
        number = key_sequence(key)
        if number is not None:
            self._sequence[nid] = number
        return nid

    def sequence(self, nid: int) -> int | None:
        """The node's creation number, where torch's node identity is one (see compat.node_key)."""
        return self._sequence.get(nid)

    def clear(self) -> None:
        self._sequence.clear()
        self._refs.clear()
        self._by_tid.clear()
        self._nodes.clear()


def is_array(obj: object) -> bool:
    return np is not None and isinstance(obj, np.ndarray)


def tensor_memory(t: torch.Tensor) -> tuple[int, int] | None:
    """The byte range of the storage behind ``t`` (shared by all its views), None when it has none."""
    if not is_plain(t):
        return None

    def read() -> tuple[int, int] | None:
        storage = t.untyped_storage()
        start = storage.data_ptr()
        return (start, start + storage.nbytes()) if start else None
    return attempt(read, None)


def array_memory(arr: Any) -> tuple[int, int] | None:
    base = arr
    while isinstance(getattr(base, "base", None), np.ndarray):
        base = base.base
    start = base.__array_interface__["data"][0]
    return (start, start + base.nbytes) if start else None


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
    """Metadata only, read quietly; a field that cannot be read keeps its default."""
    with quiet():
        grad_fn = grad_fn_of(t)
        dtype = attempt(lambda: _dtype_name(t.dtype), "")
        return TensorInfo(
            tid=ids.tid(t),
            kind="tensor",
            shape=shape_of(t),
            dtype=dtype,
            device=attempt(lambda: _device_name(t.device), "?"),
            requires_grad=attempt(lambda: bool(t.requires_grad), False),
            is_leaf=attempt(lambda: bool(t.is_leaf), True),
            grad_fn=None if grad_fn is None else type(grad_fn).__name__,
            node=None if grad_fn is None else ids.node(grad_fn),
            memory=tensor_memory(t),
            version=attempt(lambda: version_of(t), 0),
        )


def _dtype_name(dtype: torch.dtype) -> str:
    name = _dtype_names.get(dtype)
    if name is None:
        name = _dtype_names[dtype] = str(dtype).removeprefix("torch.")
    return name


def _device_name(device: torch.device) -> str:
    name = _device_names.get(device)
    if name is None:
        name = _device_names[device] = str(device)
    return name


_dtype_names: dict[torch.dtype, str] = {}
_device_names: dict[torch.device, str] = {}


def grad_value(grad: torch.Tensor, before: Any = None, source: str = "leaf") -> GradValue:
    """A gradient made plain: values when small, the true norm (complex and sparse included) always."""
    norm = norm_of(grad)
    return GradValue(shape=shape_of(grad), values=small_values(grad), norm=float("nan") if norm is None else norm,
                     before=before, source=source)
