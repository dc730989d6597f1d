"""Walk an autograd graph into a plain `GraphSnapshot`, without keeping it alive.

The walk is iterative (deep chains must not hit the recursion limit), names
nodes after the tensors they produced, reads what each node saved for
backward, and notices saved values that changed behind autograd's back: small
tensors seen by recorded ops are fingerprinted, and a saved tensor with the
same data pointer, shape and version but other bytes was written through a
NumPy array or ``.data``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from ..trace.events import GraphNode, GraphSnapshot, Site, TensorInfo
from .tensors import Identity, fingerprint, fingerprint_key

MAX_GRAPH_NODES = 5000  # capture cap; the views fold and cap further
MAX_INSPECTED = 500  # nodes per snapshot whose shape and saved tensors are read
VIEW_BASE = "view base"  # the label of a view's base tensor in a snapshot
_saved_names: dict[type, tuple[str, ...]] = {}


@dataclass
class Walk:
    """What one walk collected besides the snapshot."""

    leaves: list[torch.Tensor] = field(default_factory=list)
    node_ids: set[int] = field(default_factory=set)  # id() of every node reached
    named_nodes: dict[int, int] = field(default_factory=dict)  # id(grad_fn) -> tid, from the namespace
    stale: list[tuple[int, str, int]] = field(default_factory=list)  # (node id, saved name, tid)
    inspected: int = 0


class GraphWalker:
    """Snapshots graphs for one recorder: knows which op made each node, and fingerprints."""

    def __init__(self, ids: Identity, namespace: dict[str, Any]) -> None:
        self.ids = ids
        self.namespace = namespace
        self._node_tid: dict[int, int] = {}
        self._node_site: dict[int, Site] = {}
        self._values: dict[tuple[int, tuple[int, ...], int], tuple[int, int]] = {}  # key -> (fingerprint, tid)
        self.earlier_sites: dict[int, Site] = {}  # tid -> where an earlier cell made it (see Trace.provenance)

    def note_output(self, info: TensorInfo, site: Site) -> None:
        """Remember which line made a graph node (the first op that produced it)."""
        if info.node is not None and info.node not in self._node_site:
            self._node_tid[info.node] = info.tid
            self._node_site[info.node] = site

    def remember_values(self, args: tuple[Any, ...], result: Any, refresh: bool = False) -> None:
        """Fingerprint small tensors of a recorded op, to spot later writes autograd cannot see."""
        items = [*args, *(result if isinstance(result, (tuple, list)) else (result,))]
        for item in items:
            if isinstance(item, torch.Tensor):
                key = fingerprint_key(item)
                if key is None:
                    continue
                tid = self.ids.tid(item)
                known = self._values.get(key)
                if refresh or known is None or known[1] != tid:  # new, reused memory, or written by this op
                    value = fingerprint(item)
                    if value is not None:
                        self._values[key] = (value, tid)

    def take(self, roots: list[torch.Tensor], walk: Walk) -> GraphSnapshot:
        """The graph reachable from ``roots``, breadth-first from them."""
        ids = self.ids
        start = [r.grad_fn for r in roots if r.grad_fn is not None]
        root_tid = ids.tid(roots[0]) if roots else None
        walk.named_nodes = self._named_grad_fns()
        queue: deque[Any] = deque(start)
        seen: dict[int, int] = {id(n): ids.node(n) for n in start}
        nodes: list[GraphNode] = []
        edges: list[tuple[int, int]] = []
        skipped = 0
        while queue:  # iterative: deep chains must not hit the recursion limit
            node = queue.popleft()
            nid = seen[id(node)]
            if len(nodes) >= MAX_GRAPH_NODES:
                skipped += 1
                continue
            nodes.append(self._graph_node(node, nid, walk))
            for child, _ in node.next_functions:
                if child is None:
                    continue
                if id(child) not in seen:
                    seen[id(child)] = ids.node(child)
                    queue.append(child)
                edges.append((seen[id(child)], nid))
        walk.node_ids = set(seen)
        self._add_view_bases(nodes, edges)
        kept = {n.nid for n in nodes}
        return GraphSnapshot(root_tid, tuple(nodes), tuple(e for e in edges if e[0] in kept and e[1] in kept), skipped)

    def _add_view_bases(self, nodes: list[GraphNode], edges: list[tuple[int, int]]) -> None:
        """torchviz's dotted 'view base' nodes: the tensor a named view looks into."""
        ids = self.ids
        for node in nodes[:MAX_INSPECTED]:
            view = ids.get(node.tid) if node.tid is not None else None
            if not isinstance(view, torch.Tensor) or view.grad_fn is None:
                continue
            base = view._base
            if not isinstance(base, torch.Tensor):
                continue
            base_nid = ids.node(base)
            if not any(n.nid == base_nid for n in nodes):
                nodes.append(GraphNode(base_nid, VIEW_BASE, ids.tid(base), None, tuple(base.shape),
                                       dtype=str(base.dtype).removeprefix("torch.")))
            edges.append((base_nid, node.nid))

    def _graph_node(self, node: Any, nid: int, walk: Walk) -> GraphNode:
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):  # AccumulateGrad: the leaf itself
            walk.leaves.append(variable)
            return GraphNode(nid, type(node).__name__, self.ids.tid(variable), None, tuple(variable.shape),
                             dtype=str(variable.dtype).removeprefix("torch."))
        tid = self._node_tid.get(nid)
        if tid is not None and getattr(self.ids.get(tid), "grad_fn", node) is not node:
            tid = None  # the tensor was since changed in place: this node is its earlier version
        tid = tid or walk.named_nodes.get(id(node))
        site = self._node_site.get(nid) or (self.earlier_sites.get(tid) if tid is not None else None)
        walk.inspected += 1
        if walk.inspected > MAX_INSPECTED:  # deep graphs: the view draws the nodes near the root
            return GraphNode(nid, type(node).__name__, tid, site)
        shape, dtype = _node_meta(node)
        return GraphNode(nid, type(node).__name__, tid, site, shape,
                         self._saved(node, nid, walk), dtype)

    def _saved(self, node: Any, nid: int, walk: Walk) -> tuple[str, ...]:
        """Describe what a node saved for backward; note saved values changed behind autograd's back."""
        out = []
        for attr in _saved_names_of(node):
            try:
                value = getattr(node, attr)
            except RuntimeError as error:  # freed by an earlier backward, or modified in place
                out.append(f"{attr[7:]}: {'modified in place' if 'inplace' in str(error) else 'freed'}")
                continue
            if not isinstance(value, torch.Tensor):
                continue
            out.append(f"{attr[7:]}: {tuple(value.shape)}")
            key = fingerprint_key(value)
            known = self._values.get(key) if key is not None else None
            # only while the tensor we fingerprinted lives: otherwise its memory may hold another tensor now
            if known is not None and self.ids.alive(known[1]) and fingerprint(value) != known[0]:
                walk.stale.append((nid, attr[7:], known[1]))
        return tuple(out)

    def _named_grad_fns(self) -> dict[int, int]:
        """id(grad_fn) -> tid for the namespace's tensors: names nodes made in earlier cells."""
        found = {}
        for value in list(self.namespace.values()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                found[id(value.grad_fn)] = self.ids.tid(value)
        return found



def _node_meta(node: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of the tensor a node produced (its gradient's metadata)."""
    try:
        meta = node._input_metadata
        if not meta:
            return (), ""
        return tuple(meta[0].shape), str(meta[0].dtype).removeprefix("torch.")
    except (AttributeError, RuntimeError, IndexError, TypeError):
        return (), ""


def _saved_names_of(node: Any) -> tuple[str, ...]:
    names = _saved_names.get(type(node))
    if names is None:
        names = _saved_names[type(node)] = tuple(a for a in dir(node) if a.startswith("_saved_"))
    return names
