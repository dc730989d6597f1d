"""What a graph keeps in memory for backward: bytes per node and per graph, from the storages capture read.

Bytes are counted by storage, so views of one storage (``relu``'s output saved by ``relu`` and by the
next ``mm``) count once. A storage that lives anyway (a parameter, a leaf, a tensor the cell's variables
hold) is listed apart: backward does not free it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..report.model import Holder, Memory
from ..trace.events import GraphNode, GraphSnapshot
from .naming import Names

HOLDERS = 5
_UNREAD = ("saved_tensors_hooks", "(checkpoint)", "not read (")  # see capture.reads: never unpacked


def node_memory(raw: GraphNode, names: Names) -> tuple[int, tuple[str, ...]]:
    """(bytes only the graph keeps, names of what lives anyway) for one node."""
    sizes = {m.key: m.nbytes for m in raw.memory if m.owner is None}
    apart = dict.fromkeys(_owner_name(names, m.owner) for m in raw.memory if m.owner is not None)
    return sum(sizes.values()), tuple(apart)


@dataclass
class _Group:
    """The nodes of one class at one line (a loop's iterations) and the storages they keep."""

    first: GraphNode
    count: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    modules: set[str | None] = field(default_factory=set)


def graph_memory(snap: GraphSnapshot, names: Names, modules: dict[int, str] | None = None) -> Memory | None:
    """The graph's total, its biggest holders and what it saved that lives anyway; None if it keeps nothing.
    ``modules``: node id -> the module it ran in (see `modules.node_modules`)."""
    alone: dict[int, int] = {}
    apart: dict[int, tuple[int, int]] = {}  # key -> (bytes, owner tid)
    groups: dict[tuple[str, int | None, str], _Group] = {}
    for node in snap.nodes:
        for m in node.memory:
            if m.owner is None:
                alone[m.key] = m.nbytes
                site = node.site
                group = groups.setdefault((node.label, site.line if site else None, site.code if site else ""),
                                          _Group(node))
                group.sizes[m.key] = m.nbytes
            else:
                apart[m.key] = (m.nbytes, m.owner)
    unread = snap.unread + sum(any(u in s for s in n.saved for u in _UNREAD) for n in snap.nodes)
    if not alone and not apart and not unread:
        return None
    _count_members(snap, groups, modules or {})
    ranked = sorted(_merge_unsited(groups), key=lambda g: -sum(g.sizes.values()))[:HOLDERS]
    holders = tuple(_holder(g, names) for g in ranked)
    apart_names = tuple(dict.fromkeys(_owner_name(names, owner) for _, owner in apart.values()))
    return Memory(sum(alone.values()), len(alone), holders, sum(size for size, _ in apart.values()), apart_names,
                  unread, snap.in_use)


def _count_members(snap: GraphSnapshot, groups: dict[tuple[str, int | None, str], _Group],
                   modules: dict[int, str]) -> None:
    for node in snap.nodes:
        site = node.site
        group = groups.get((node.label, site.line if site else None, site.code if site else ""))
        if group is not None and any(m.owner is None for m in node.memory):
            group.count += 1
            group.modules.add(modules.get(node.nid))


def _merge_unsited(groups: dict[tuple[str, int | None, str], _Group]) -> list[_Group]:
    """A loop's nodes past the recording cap have no line: they join the one sited group of their class,
    when there is exactly one (as the drawing folds them, see `graphs.fold`)."""
    sited: dict[str, list[_Group]] = {}
    for (label, line, _), group in groups.items():
        if line is not None:
            sited.setdefault(label, []).append(group)
    out = []
    for (label, line, _), group in groups.items():
        kin = sited.get(label, [])
        if line is None and len(kin) == 1:
            kin[0].sizes.update(group.sizes)
            kin[0].count += group.count
            kin[0].modules |= group.modules
        else:
            out.append(group)
    return out


def _holder(group: _Group, names: Names) -> Holder:
    node = group.first
    site = node.site
    module = next(iter(group.modules)) if len(group.modules) == 1 else None
    return Holder(node.nid, node.label, names.label(node.tid), site.line if site else None,
                  site.code if site else "", sum(group.sizes.values()), max(group.count, 1), module)


def _owner_name(names: Names, tid: int) -> str:
    return names.label(tid) or "an unnamed tensor"


def pinned(snap: GraphSnapshot, min_bytes: int, ratio: int) -> list[tuple[GraphNode, int, int]]:
    """(node, storage bytes, bytes it needs) where a graph keeps a big storage only for slices of it:
    every saved view of that storage spans at most 1/``ratio`` of it, and the rest is ``min_bytes`` or more."""
    widest: dict[int, int] = {}
    size: dict[int, int] = {}
    first: dict[int, GraphNode] = {}
    for node in snap.nodes:
        for m in node.memory:
            if m.owner is None:
                widest[m.key] = max(widest.get(m.key, 0), m.view_bytes)
                size[m.key] = m.nbytes
                first.setdefault(m.key, node)
    return [(first[key], size[key], widest[key]) for key in size
            if size[key] >= ratio * widest[key] and size[key] - widest[key] >= min_bytes]
