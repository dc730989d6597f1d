"""Modules as clusters: which nn.Module each graph node belongs to, the module tree a graph
shows, and folding modules deeper than ``--depth`` into one node each.

Ops recorded in detail carry the module whose ``forward`` made them (see capture/modules.py);
parameter leaves belong to the module that owns them (``model.0.weight`` → ``model.0``). Ops
past the recording cap, and nodes a composite op made inside C++, carry nothing: such a node
takes the deepest module shared by the nodes that consume it.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import replace
from itertools import islice
from math import prod

from ..report.model import Graph, ModuleRow, Node
from ..trace.events import GraphSnapshot, Trace
from .naming import Names

MAX_HOLDS = 400  # names and node classes a folded module lists for the widget's find box
INFER_PASSES = 50  # rounds of placing unrecorded nodes from their consumers (one per link of a chain)


def node_modules(trace: Trace, names: Names, snap: GraphSnapshot) -> dict[int, str]:
    """Graph node id -> qualified module name, for the nodes of ``snap`` that ran inside a named module."""
    made = {out.node: op.module for op in trace.ops for out in op.outputs if out.node is not None and op.module}
    recorded = {out.node for op in trace.ops for out in op.outputs if out.node is not None}
    found: dict[int, str] = {}
    for raw in snap.nodes:
        if raw.nid in made:
            found[raw.nid] = made[raw.nid]
        elif raw.label == "AccumulateGrad":
            owner = _owner(names.all(raw.tid) if raw.tid is not None else [], names.qualified, trace.modules)
            if owner is not None:
                found[raw.nid] = owner
    unplaced = {raw.nid for raw in snap.nodes if raw.nid not in found and raw.nid not in recorded
                and raw.label != "AccumulateGrad" and raw.nid != (snap.nodes[0].nid if snap.nodes else None)}
    _infer(found, unplaced, snap.edges)
    return found


def _owner(names: list[str], qualified: set[str], modules: dict[str, str]) -> str | None:
    for name in names:
        if name in qualified and "." in name and name.rsplit(".", 1)[0] in modules:
            return name.rsplit(".", 1)[0]
    return None


def _infer(found: dict[int, str], unplaced: set[int], edges: tuple[tuple[int, int], ...]) -> None:
    """An unrecorded node (made inside a composite op, or past the recording cap) belongs where
    the nodes consuming it belong: the deepest module they share."""
    consumers: dict[int, list[int]] = {}
    for src, dst in edges:
        consumers.setdefault(src, []).append(dst)
    for _ in range(INFER_PASSES):
        placed = {}
        for nid in unplaced:
            around = [found.get(n) for n in consumers.get(nid, ())]
            if around and all(around):
                shared = _common([m for m in around if m])
                if shared:
                    placed[nid] = shared
        if not placed:
            return
        found.update(placed)
        unplaced -= placed.keys()


def _common(modules: list[str]) -> str | None:
    parts = [m.split(".") for m in modules]
    shared = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        shared.append(level[0])
    return ".".join(shared) or None


def depth_of(module: str) -> int:
    """`model` is 1, `model.0` is 2, `encoder.layers.3.self_attn` is 4."""
    return module.count(".") + 1


def fold_modules(nodes: list[Node], edges: list[tuple[int, int]], depth: int | None,
                 classes: dict[str, str], closed: AbstractSet[str] = frozenset(),
                 opened: AbstractSet[str] = frozenset()) -> tuple[list[Node], list[tuple[int, int]]]:
    """Each module deeper than ``depth`` levels, or named in ``closed``, drawn as one node (kind "module")
    in its parent's cluster; a module in ``opened`` is not folded by ``depth``."""
    if depth is None and not closed:
        return nodes, edges
    tops = {n.id: fold_point(n.module, depth, closed, opened) for n in nodes if n.kind != "root"}
    groups: dict[str, list[Node]] = {}
    for node in nodes:
        top = tops.get(node.id)
        if top is not None:
            groups.setdefault(top, []).append(node)
    folded = {top: _folded(top, -(index + 1), members, edges, tops, classes)
              for index, (top, members) in enumerate(groups.items())}
    alias = {node.id: folded[top].id for top, members in groups.items() for node in members}
    out, placed = [], set()
    for node in nodes:
        top = tops.get(node.id)
        if top is None:
            out.append(node)
        elif top not in placed:
            placed.add(top)
            out.append(folded[top])
    kept = dict.fromkeys((alias.get(a, a), alias.get(b, b)) for a, b in edges)
    return out, [(a, b) for a, b in kept if a != b]


def _folded(top: str, nid: int, members: list[Node], edges: list[tuple[int, int]], tops: dict[int, str | None],
            classes: dict[str, str]) -> Node:
    """The one node a module is drawn as: what it is (class, parameters, output shape), not the line
    that called it, which every layer of a model shares."""
    first = members[0]
    inside = {n.id for n in members}
    outputs = {src for src, dst in edges if src in inside and tops.get(dst) != top}
    # nodes run from the root: the first is its last output; with none drawn (only its parameters), none
    output = next((n for n in members if n.id in outputs and n.kind != "leaf"), None)
    params = sum(prod(n.shape) for n in members if n.kind == "leaf")
    holds = dict.fromkeys(x for n in members for x in (*(n.name or "").split(", "), n.label, n.module or "") if x)
    return Node(id=nid, label=classes.get(top, "Module"), name=top, line=first.line, code=first.code,
                shape=output.shape if output else (), kind="module", module=top, step=first.step,
                repeat=first.repeat, dtype=output.dtype if output else "", params=params,
                holds=tuple(islice(holds, MAX_HOLDS)),
                saved_bytes=sum(n.saved_bytes for n in members))  # what its ops keep for backward


def fold_point(module: str | None, depth: int | None, closed: AbstractSet[str],
               opened: AbstractSet[str]) -> str | None:
    """The outermost module around ``module`` that is drawn folded, if any."""
    if module is None:
        return None
    parts = module.split(".")
    for level in range(1, len(parts) + 1):
        name = ".".join(parts[:level])
        if name in closed or (depth is not None and level == depth + 1 and name not in opened):
            return name
    return None


def cluster_of(node: Node) -> str | None:
    """The module a node is drawn inside: its own, or for a folded module node its parent's."""
    if node.kind == "module" and node.module is not None:
        return node.module.rsplit(".", 1)[0] if "." in node.module else None
    return node.module


def with_modules(graph: Graph, classes: dict[str, str]) -> Graph:
    """The graph with its module tree: every module holding a node, and their named ancestors."""
    members: dict[str, list[int]] = {}
    for node in graph.nodes:
        cluster = cluster_of(node)
        if cluster is not None:
            members.setdefault(cluster, []).append(node.id)
    names = set(members)
    for name in list(members):
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in classes)
    repeated = {first: (count, label) for first, count, label in graph.repeated}
    rows = tuple(ModuleRow(name, classes.get(name, "Module"), _parent(name, names), tuple(members.get(name, ())),
                           *repeated.get(name, (1, "")))
                 for name in sorted(names, key=lambda n: (depth_of(n), n)))
    return replace(graph, modules=rows) if rows else graph


def _parent(name: str, names: set[str]) -> str | None:
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in names:
            return ".".join(parts[:i])
    return None
