"""Walk an autograd graph into a plain `GraphSnapshot`, without keeping it alive.

The walk is iterative (deep chains must not hit the recursion limit), names
nodes after the tensors they produced, reads what each node saved for
backward (without unpacking what a user hook packed), and notices saved values
that changed behind autograd's back: the small tensors each recorded op read
and made are fingerprinted for the node it made, and a saved tensor over the
same bytes at the same version but with other contents was written through a
NumPy array or ``.data``.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..trace.events import GraphNode, GraphSnapshot, SavedMemory, Site, TensorInfo, TensorValue
from .compat import (
    NOT_AVAILABLE,
    SAVED_HANDLES_TELL_HOOKS,
    active_unpack_hook,
    forward_class,
    input_metadata,
    next_node_number,
    node_key,
    version_of,
)
from .reads import (
    StorageKey,
    attempt,
    base_of,
    device_name,
    fingerprint,
    grad_fn_of,
    memory_in_use,
    next_functions,
    profiling,
    quiet,
    saved_slots,
    saved_tensor,
    saved_tensors,
    shape_of,
    storage_bytes,
    storage_key,
)
from .tensors import Identity
from .values import value_of

MAX_GRAPH_NODES = 5000  # capture cap; the views fold and cap further
MAX_INSPECTED = 500  # nodes per snapshot whose shape and saved tensors are read
VIEW_BASE = "view base"  # the label of a view's base tensor in a snapshot
Fingerprint = tuple[tuple[int, int], int, bytes]  # (byte span, version, digest): see reads.fingerprint
READ_IN_USE = 64 * 2**20  # bytes a graph keeps before the process's own memory is read (for the note)


@dataclass
class Walk:
    """What one walk collected besides the snapshot."""

    leaves: list[torch.Tensor] = field(default_factory=list)
    node_ids: set[Hashable] = field(default_factory=set)  # compat.node_key of every node reached
    named_nodes: dict[Hashable, int] = field(default_factory=dict)  # node_key(grad_fn) -> tid, from the namespace
    stale: list[tuple[int, str, int]] = field(default_factory=list)  # (node id, saved name, tid)
    inspected: int = 0
    saved: dict[int, list[tuple[StorageKey, int, int]]] = field(default_factory=dict)  # node -> storages
    owners: dict[StorageKey, int] = field(default_factory=dict)  # storages that live anyway -> their tensor


class GraphWalker:
    """Snapshots graphs for one recorder: knows which op made each node, and fingerprints."""

    def __init__(self, ids: Identity, namespace: dict[str, Any]) -> None:
        self.ids = ids
        self.namespace = namespace
        self._node_tid: dict[int, int] = {}
        self._node_site: dict[int, Site] = {}
        self._values: dict[int, list[tuple[Fingerprint, int]]] = {}  # node id -> what its op read and made, tids
        self._values_of: dict[int, int] = {}  # inner node id -> the recorded node whose op made it
        self.earlier_sites: dict[int, Site] = {}  # tid -> where an earlier cell made it (see Trace.provenance)
        self._made: dict[int, TensorValue] = {}  # node id -> the value its op produced
        self._leaf_made: dict[int, tuple[int, TensorValue]] = {}  # leaf tid -> (version, value) when made
        self.apply_sites: dict[type, set[Site]] = {}  # a custom autograd.Function -> the lines that applied it
        # node id -> the saved_tensors_hooks' unpack hook active when its op ran (where handles don't say)
        self._made_under: dict[int, Any] = {}
        self._node_meta: dict[int, tuple[tuple[int, ...], str]] = {}  # nid -> its op's output (shape, dtype)
        self._start: tuple[int, Any] | None = None  # (first node number of the cell, hook active then)

    def keep_values(self, tensors: dict[int, torch.Tensor], store: Any) -> None:
        """Leave the values of the cell's named results to later cells (weakly, with their grad_fn's id)."""
        for tensor in tensors.values():
            grad_fn = grad_fn_of(tensor)
            value = self._made.get(self.ids.node(grad_fn)) if grad_fn is not None else None
            if value is not None:
                store[tensor] = (node_key(grad_fn), _version_of(tensor), value)

    def recall_values(self, tensors: list[torch.Tensor], store: Any) -> None:
        """Values an earlier cell read for these tensors, while their node and version are unchanged."""
        for tensor in tensors:
            kept = store.get(tensor)
            grad_fn = grad_fn_of(tensor)
            if kept is None or grad_fn is None or kept[0] != node_key(grad_fn):
                continue
            if kept[1] == _version_of(tensor):
                self._made.setdefault(self.ids.node(grad_fn), kept[2])

    def note_value(self, info: TensorInfo, result: Any) -> None:
        """Remember the value an op produced, for its node (or, for a new leaf, its tensor)."""
        if info.node is not None and info.node not in self._made:
            value = value_of(result)
            if value is not None:
                self._made[info.node] = value
        elif info.node is None and info.requires_grad and info.is_leaf:  # a tensor without autograd: never read
            value = value_of(result)
            if value is not None:
                self._leaf_made[info.tid] = (info.version, value)

    def note_start(self) -> None:
        """Where the cell's nodes start, and under which hook: bounds the nodes of its first op (old torch)."""
        if not SAVED_HANDLES_TELL_HOOKS and not profiling():  # a profiler would see our tiny node
            number = next_node_number()
            self._start = None if number is None else (number - 1, active_unpack_hook())

    def note_output(self, info: TensorInfo, site: Site) -> None:
        """Remember which line made a graph node (the first op that produced it)."""
        if info.node is not None and info.node not in self._node_site:
            self._node_tid[info.node] = info.tid
            self._node_site[info.node] = site
            self._node_meta[info.node] = (info.shape, info.dtype)
            if not SAVED_HANDLES_TELL_HOOKS:
                self._made_under[info.node] = active_unpack_hook()

    def remember_values(self, node: int, args: tuple[Any, ...], result: Any) -> None:
        """Fingerprint the small tensors the op that made ``node`` read and returned: what it may have saved."""
        items = [*args, *(result if isinstance(result, (tuple, list)) else (result,))]
        found = []
        for item in items:
            if isinstance(item, torch.Tensor):
                value = fingerprint(item)
                if value is not None:
                    found.append((value, self.ids.tid(item)))
        if found:
            self._values[node] = found

    def take(self, roots: list[torch.Tensor], walk: Walk) -> GraphSnapshot:
        """The graph reachable from ``roots``, breadth-first from them; read quietly."""
        with quiet():
            return self._take(roots, walk)

    def _take(self, roots: list[torch.Tensor], walk: Walk) -> GraphSnapshot:
        ids = self.ids
        start = [fn for fn in map(grad_fn_of, roots) if fn is not None]
        root_tid = ids.tid(roots[0]) if roots else None
        walk.named_nodes = self._named_grad_fns()
        queue: deque[Any] = deque(start)
        seen: dict[Hashable, int] = {node_key(n): ids.node(n) for n in start}
        nodes: list[GraphNode] = []
        edges: list[tuple[int, int]] = []
        skipped = 0
        while queue:  # iterative: deep chains must not hit the recursion limit
            node = queue.popleft()
            nid = seen[node_key(node)]
            if len(nodes) >= MAX_GRAPH_NODES:
                skipped += 1
                continue
            nodes.append(self._graph_node(node, nid, walk))
            for child, _ in next_functions(node):
                if child is None:
                    continue
                key = node_key(child)
                if key not in seen:
                    seen[key] = child_nid = ids.node(child)
                    if child_nid not in self._values:  # a composite op's inner node: its op read what we saw
                        self._values_of[child_nid] = self._values_of.get(nid, nid)
                    queue.append(child)
                edges.append((seen[key], nid))
        walk.node_ids = set(seen)
        self._add_view_bases(nodes, edges)
        kept = {n.nid for n in nodes}
        nodes, in_use = self._with_memory(nodes, walk)
        return GraphSnapshot(root_tid, tuple(nodes), tuple(e for e in edges if e[0] in kept and e[1] in kept), skipped,
                             max(0, walk.inspected - MAX_INSPECTED), in_use)

    def _with_memory(self, nodes: list[GraphNode], walk: Walk) -> tuple[list[GraphNode], int | None]:
        """Each node's saved storages, numbered per graph, with the tensor that keeps each anyway (a
        parameter, a leaf, a variable of the cell); and, when the graph alone keeps much, the process's
        memory on that device (for the note that activations dominate it)."""
        if not walk.saved:
            return nodes, None
        for leaf in walk.leaves:  # read only now: most graphs save no leaf's storage
            _own(walk, leaf, self.ids.tid(leaf))
        self._own_namespace(walk)
        numbers: dict[StorageKey, int] = {}
        alone: dict[StorageKey, int] = {}
        out = []
        for node in nodes:
            found = walk.saved.get(node.nid)
            if not found:
                out.append(node)
                continue
            memory = []
            for key, size, span in found:
                owner = walk.owners.get(key)
                if owner is None:
                    alone[key] = size
                memory.append(SavedMemory(numbers.setdefault(key, len(numbers) + 1), size, span, owner))
            out.append(replace(node, memory=tuple(memory)))
        return out, _in_use(alone)

    def _own_namespace(self, walk: Walk) -> None:
        """The cell's variables keep their storages alive whatever backward frees (looked at only while
        some saved storage has no owner yet)."""
        if all(key in walk.owners for found in walk.saved.values() for key, _, _ in found):
            return
        for value in list(self.namespace.values()):
            if isinstance(value, torch.Tensor):
                key = storage_key(value)
                if key is not None:
                    walk.owners.setdefault(key, self.ids.tid(value))

    def _add_view_bases(self, nodes: list[GraphNode], edges: list[tuple[int, int]]) -> None:
        """torchviz's dotted 'view base' nodes: the tensor a named view looks into."""
        ids = self.ids
        for node in nodes[:MAX_INSPECTED]:
            view = ids.get(node.tid) if node.tid is not None else None
            if not isinstance(view, torch.Tensor) or grad_fn_of(view) is None:
                continue
            base = base_of(view)
            if not isinstance(base, torch.Tensor):
                continue
            base_nid = ids.node(base)
            if not any(n.nid == base_nid for n in nodes):
                nodes.append(GraphNode(base_nid, VIEW_BASE, ids.tid(base), None, shape_of(base),
                                       dtype=str(base.dtype).removeprefix("torch.")))
            edges.append((base_nid, node.nid))

    def _graph_node(self, node: Any, nid: int, walk: Walk) -> GraphNode:
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):  # AccumulateGrad: the leaf itself
            walk.leaves.append(variable)
            leaf_tid = self.ids.tid(variable)
            return GraphNode(nid, type(node).__name__, leaf_tid, None, shape_of(variable),
                             dtype=str(variable.dtype).removeprefix("torch."),
                             value=self._leaf_value(leaf_tid, variable))
        tid = self._node_tid.get(nid)
        if tid is not None and _grad_fn_now(self.ids.get(tid), node) is not node:
            tid = None  # the tensor was since changed in place: this node is its earlier version
        tid = tid or walk.named_nodes.get(node_key(node))
        site = (self._node_site.get(nid) or (self.earlier_sites.get(tid) if tid is not None else None)
                or self._applied_at(node))
        walk.inspected += 1
        if walk.inspected > MAX_INSPECTED:  # deep graphs: the view draws the nodes near the root
            return GraphNode(nid, type(node).__name__, tid, site)
        shape, dtype = self._meta(node, nid, tid)
        return GraphNode(nid, type(node).__name__, tid, site, shape,
                         self._saved(node, nid, walk), dtype, self._made.get(nid))

    def _applied_at(self, node: Any) -> Site | None:
        """A custom Function's node (``CubeBackward``) has no op of its own: the line that applied the
        Function, when it was applied from one line only (else we cannot tell which call made this node)."""
        if not self.apply_sites:
            return None
        cls = forward_class(node)
        sites = self.apply_sites.get(cls) if cls is not None else None
        return next(iter(sites)) if sites is not None and len(sites) == 1 else None

    def _leaf_value(self, tid: int, leaf: torch.Tensor) -> TensorValue | None:
        """The value the cell made the leaf with; read now if it was made earlier or written since."""
        made = self._leaf_made.get(tid)
        if made is not None and made[0] == _version_of(leaf):
            return made[1]
        return value_of(leaf)

    def _saved(self, node: Any, nid: int, walk: Walk) -> tuple[str, ...]:
        """Describe what a node saved for backward and the storages it keeps; note saved values changed
        behind autograd's back."""
        out = []
        kept: list[torch.Tensor] = []
        made_under = self._made_under_of(nid)
        for slot in saved_slots(node):
            value = saved_tensor(node, slot, made_under)
            if isinstance(value, str):
                out.append(f"{slot}: {value}")
            elif isinstance(value, torch.Tensor):
                out.append(f"{slot}: {shape_of(value)}")
                kept.append(value)
                if self._changed_behind_autograd(nid, value):
                    walk.stale.append((nid, slot, self._fingerprinted_tid(nid, value)))
            elif value is None:
                kept.extend(saved_tensors(node, slot))  # a list slot: no sentence, but its bytes count
        self._note_storages(nid, kept, walk)
        return tuple(out)

    def _note_storages(self, nid: int, saved: list[torch.Tensor], walk: Walk) -> None:
        """(storage, its bytes, the saved tensor's bytes) for each saved tensor; metadata only (inside quiet)."""
        found = []
        for tensor in saved:
            key = storage_key(tensor)
            size = storage_bytes(tensor) if key is not None else 0
            if key is None or not size:
                continue
            found.append((key, size, tensor.numel() * tensor.element_size()))
            if type(tensor) is torch.nn.Parameter or (tensor.is_leaf and tensor.requires_grad):
                walk.owners.setdefault(key, self.ids.tid(tensor))
        if found:
            walk.saved[nid] = found

    def _meta(self, node: Any, nid: int, tid: int | None) -> tuple[tuple[int, ...], str]:
        """Shape and dtype of the tensor a node produced: from the node, or where this torch's nodes don't
        carry their input metadata (compat.input_metadata), from the op we saw make it or the tensor it
        made, if alive."""
        meta = input_metadata(node)
        if meta is NOT_AVAILABLE:
            if nid in self._node_meta:
                return self._node_meta[nid]
            made = self.ids.get(tid) if tid is not None else None
            if not isinstance(made, torch.Tensor):
                return (), ""
            return shape_of(made), str(made.dtype).removeprefix("torch.")
        if not meta:
            return (), ""
        shape, dtype = meta
        return shape, str(dtype).removeprefix("torch.")

    def _made_under_of(self, nid: int) -> Any:
        """The unpack hook active when ``nid``'s op ran (where saved-tensor handles don't say, old torch).

        A node no recorded op returned (an inner node of ``F.linear``) was made between two recorded
        ones: when both ran under the same hooks (or none), so did it. Else NOT_AVAILABLE: a node made
        in another cell may have been packed by a hook, and is never unpacked.
        """
        found = self._made_under.get(nid, NOT_AVAILABLE)
        number = self.ids.sequence(nid)
        if nid in self._made_under or number is None:
            return found
        order = sorted([(n, h) for k, h in self._made_under.items() if (n := self.ids.sequence(k)) is not None]
                       + ([self._start] if self._start is not None else []), key=lambda item: item[0])
        at = bisect.bisect(order, number, key=lambda item: item[0])
        if 0 < at < len(order) and order[at - 1][1] is order[at][1]:
            return order[at][1]
        return NOT_AVAILABLE

    def _changed_behind_autograd(self, nid: int, saved: torch.Tensor) -> bool:
        """The saved bytes differ from what the op that made ``nid`` read, at the same version (no in-place op)."""
        now = fingerprint(saved)
        if now is None:
            return False
        for (span, version, digest), tid in self._recorded_for(nid):
            # only while the tensor we fingerprinted lives: otherwise its memory may hold another tensor now
            if span == now[0] and version == now[1] and self.ids.alive(tid):
                return digest != now[2]
        return False

    def _recorded_for(self, nid: int) -> list[tuple[Fingerprint, int]]:
        """What the recorded op that made ``nid`` read (for an inner node of ``F.linear``: that call's op)."""
        return self._values.get(nid) or self._values.get(self._values_of.get(nid, nid), [])

    def _fingerprinted_tid(self, nid: int, saved: torch.Tensor) -> int:
        now = fingerprint(saved)
        for (span, _, _), tid in self._recorded_for(nid):
            if now is not None and span == now[0]:
                return tid
        return self.ids.tid(saved)

    def _named_grad_fns(self) -> dict[Hashable, int]:
        """node_key(grad_fn) -> tid for the namespace's tensors: names nodes made in earlier cells."""
        found = {}
        for value in list(self.namespace.values()):
            grad_fn = grad_fn_of(value) if isinstance(value, torch.Tensor) else None
            if grad_fn is not None:
                found[node_key(grad_fn)] = self.ids.tid(value)
        return found



def _own(walk: Walk, tensor: torch.Tensor, tid: int) -> None:
    """``tensor`` lives as long as the user's objects do: its storage is not the graph's to free."""
    key = storage_key(tensor)
    if key is not None:
        walk.owners.setdefault(key, tid)


def _in_use(alone: dict[StorageKey, int]) -> int | None:
    """The process's memory on the device where the graph alone keeps the most, if that is much."""
    per_device: dict[int, int] = {}
    for (device, _), size in alone.items():
        per_device[device] = per_device.get(device, 0) + size
    device, total = max(per_device.items(), key=lambda item: item[1], default=(-1, 0))
    return memory_in_use(device_name((device, 0))) if total >= READ_IN_USE else None


def _version_of(t: torch.Tensor) -> int:
    return attempt(lambda: version_of(t), -1)


def _grad_fn_now(obj: Any, default: Any) -> Any:
    """The object's grad_fn now (it changes when the tensor is written in place); ``default`` if it has none."""
    return grad_fn_of(obj) if isinstance(obj, torch.Tensor) else default
