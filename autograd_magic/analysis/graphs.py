"""Turn captured graph snapshots into the report's named, folded `Graph`s."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..report.model import Cut, GradRow, Graph, Memory, Node, Value
from ..trace.events import CUT_FUNCS, GraphSnapshot, OpEvent, Site, Trace
from .blocks import Block, block_label, find_blocks, fold_block
from .modules import depth_of, fold_modules, fold_point
from .naming import Names
from .replay import value_row
from .saved import graph_memory, node_memory

FOLD_MIN = 8  # a (node class, line, expression) seen this often is drawn once, marked ×N


def build_graph(snap: GraphSnapshot, names: Names, grads: dict[str, GradRow], *, root_name: str | None,
                site: Site | None, backward: bool, calls: int, cuts: Iterable[Cut], max_nodes: int,
                steps: dict[int, int], modules: dict[int, str] | None = None, depth: int | None = None,
                classes: dict[str, str] | None = None,
                folds: tuple[frozenset[str], frozenset[str]] | None = None, seed: Value | None = None) -> Graph:
    """The drawn graph; ``folds``: (opened, closed) modules, what clicks in the widget asked for; ``seed``:
    the gradient backward started from, drawn on the root."""
    root_nid = snap.nodes[0].nid if snap.nodes else None
    nodes = []
    for raw in snap.nodes:
        root = raw.nid == root_nid
        # in a loop the drawn call's root was rebound since: it is what `root_name.backward()` was called on
        name = names.label(raw.tid) or (root_name if root else None)
        grad = grads.get(name.split(", ")[0]) if name else None
        saved_bytes, saved_apart = node_memory(raw, names)
        nodes.append(Node(
            id=raw.nid,
            label=raw.label,
            name=name,
            line=raw.site.line if raw.site else None,
            code=raw.site.code if raw.site else "",
            expr=raw.site.expr if raw.site else "",
            shape=raw.shape,
            kind=_kind(raw.label, root),
            saved=raw.saved,
            grad_norm=None if grad is None else grad.norm,
            step=steps.get(raw.nid, 0),
            dtype=raw.dtype,
            cell=raw.site.cell if raw.site else None,
            value=value_row(raw.value),
            module=modules.get(raw.nid) if modules else None,
            grad=seed if root else None,
            saved_bytes=saved_bytes,
            saved_apart=saved_apart,
        ))
    ids = {n.id for n in nodes}
    leaf_by_tid = {raw.tid: raw.nid for raw in snap.nodes if raw.label == "AccumulateGrad"}
    resolved = (replace(c, source=leaf_by_tid.get(-c.source)) if c.source is not None and c.source < 0 else c
                for c in cuts)  # leaves are cut by tensor id: see cuts_of
    kept_cuts = tuple(c for c in resolved if c.source in ids)
    drawn = fit(nodes, list(snap.edges), Plan(depth, classes or {}, *(folds or (frozenset(), frozenset()))),
                max_nodes)
    capped, edges, dropped = cap(drawn.nodes, drawn.edges, max_nodes)
    shown = {n.id for n in capped}
    return Graph(root=root_name, nodes=tuple(capped), edges=tuple(edges),
                 cuts=tuple(c for c in kept_cuts if c.source in shown),
                 line=site.line if site else None, backward=backward, calls=calls, folded=drawn.folded,
                 dropped=dropped + snap.truncated, repeated=drawn.repeated,
                 memory=_drawn_holders(graph_memory(snap, names, modules), shown))


def _drawn_holders(memory: Memory | None, shown: set[int]) -> Memory | None:
    """Holders point at their drawn node; one folded into another or capped away points nowhere."""
    if memory is None:
        return None
    return replace(memory, holders=tuple(h if h.node in shown else replace(h, node=None) for h in memory.holders))


@dataclass(frozen=True)
class Plan:
    """How to fold one graph: ``--depth``, the module classes, and what a click opened or closed."""

    depth: int | None
    classes: dict[str, str]
    opened: frozenset[str] = frozenset()
    closed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Drawn:
    nodes: list[Node]
    edges: list[tuple[int, int]]
    folded: int
    repeated: tuple[tuple[str, int, str], ...]  # (first instance, count, label) of each block drawn ×N


def fit(nodes: list[Node], edges: list[tuple[int, int]], plan: Plan, max_nodes: int) -> Drawn:
    """Fold until the graph fits ``max_nodes``: repeated blocks ×N first (largest first), then whole
    modules, deepest level first; a module the user opened stays open. The cap drops only what is left."""
    blocks: list[Block] = []
    closed = set(plan.closed)
    drawn = _draw(nodes, edges, plan, blocks, closed)

    def over(d: Drawn) -> bool:
        return max_nodes > 0 and len(d.nodes) > max_nodes

    candidates = [b for b in find_blocks(nodes, plan.classes) if not plan.opened & set(b.instances)]
    for block in candidates:
        if not over(drawn):
            return drawn
        if any(fold_point(i, None, set(b.instances[1:]), set()) for b in blocks for i in block.instances):
            continue  # inside an instance already drawn as the first one
        blocks.append(block)
        drawn = _draw(nodes, edges, plan, blocks, closed)
    levels = sorted({depth_of(n.module) for n in drawn.nodes if n.module and n.kind != "module"}, reverse=True)
    for level in levels:
        if not over(drawn):
            break
        closed |= {m for n in drawn.nodes if n.module and depth_of(n.module) >= level
                   for m in [".".join(n.module.split(".")[:level])] if m not in plan.opened}
        drawn = _draw(nodes, edges, plan, blocks, closed)
    return drawn


def _draw(nodes: list[Node], edges: list[tuple[int, int]], plan: Plan, blocks: list[Block],
          closed: set[str]) -> Drawn:
    for block in blocks:
        nodes, edges = fold_block(nodes, edges, block)
    nodes, edges = fold_modules(nodes, edges, plan.depth, plan.classes, closed, plan.opened)
    nodes, edges, folded = fold(nodes, edges)
    repeated = tuple((b.first, b.count, block_label(b)) for b in blocks)
    return Drawn(nodes, edges, folded + sum(b.saving for b in blocks), repeated)


def _kind(label: str, is_root: bool) -> str:
    if label == "AccumulateGrad":
        return "leaf"
    if label == "view base":
        return "base"
    return "root" if is_root else "op"


def fold(nodes: list[Node], edges: list[tuple[int, int]]) -> tuple[list[Node], list[tuple[int, int]], int]:
    """Draw repeated structure once: op nodes sharing class, line and expression, marked ×N.

    The current version of a name (`t`) stays apart; earlier versions (`t (line 5)`) fold
    with the rest. Ops past the recording cap have no line: they join the recorded ops of
    their class when that is unambiguous, so a loop folds into one group.
    """
    sigs = {n.id: _signature(n) for n in nodes}
    merged = _merge_unsited(Counter(s for s in sigs.values() if s is not None))
    counts: Counter[Signature] = Counter()
    for sig in sigs.values():
        if sig is not None:
            counts[merged.get(sig, sig)] += 1
    heavy = {s for s, n in counts.items() if n >= FOLD_MIN}
    if not heavy:
        return nodes, edges, 0
    keep: dict[Signature, Node] = {}
    alias: dict[int, int] = {}
    out: list[Node] = []
    at: dict[Signature, int] = {}  # a group's place in ``out``
    for node in nodes:
        sig = sigs[node.id]
        group = merged.get(sig, sig) if sig is not None else None
        if group not in heavy:
            out.append(node)
            continue
        first = keep.get(group)  # type: ignore[arg-type]
        if first is None:
            label, line, expr, _ = group  # type: ignore[misc]
            first = keep[group] = replace(node, repeat=counts[group], name=_group_name(node), line=line,  # type: ignore[index]
                                          expr=expr, code=_code_of(nodes, group) if node.line is None else node.code)
            at[group] = len(out)  # type: ignore[index]
            out.append(first)
        elif node.saved_bytes:  # the drawn node stands for what all of them keep
            first = keep[group] = out[at[group]] = replace(  # type: ignore[index]
                first, saved_bytes=first.saved_bytes + node.saved_bytes)
        alias[node.id] = first.id
    folded_edges = list(dict.fromkeys((alias.get(a, a), alias.get(b, b)) for a, b in edges))
    return out, folded_edges, sum(counts[s] - 1 for s in heavy)


Signature = tuple[str, "int | None", str, "str | None"]  # (node class, line, expression, module)


def _signature(node: Node) -> Signature | None:
    current_name = node.name is not None and " (" not in node.name
    return None if node.kind != "op" or current_name else (node.label, node.line, node.expr, node.module)


def _merge_unsited(counts: Counter[Signature]) -> dict[Signature, Signature]:
    """Unsited signature -> the one sited signature of the same class and module, where there is exactly one."""
    sited: dict[tuple[str, str | None], list[Signature]] = {}
    for sig in counts:
        if sig[1] is not None:
            sited.setdefault((sig[0], sig[3]), []).append(sig)
    return {sig: sited[(sig[0], sig[3])][0] for sig in counts
            if sig[1] is None and len(sited.get((sig[0], sig[3]), [])) == 1}


def _code_of(nodes: list[Node], sig: Signature) -> str:
    return next((n.code for n in nodes if (n.label, n.line, n.expr, n.module) == sig), "")


def _group_name(node: Node) -> str | None:
    return node.name.split(" (")[0] if node.name else None


def cap(nodes: list[Node], edges: list[tuple[int, int]],
        max_nodes: int) -> tuple[list[Node], list[tuple[int, int]], int]:
    """Keep the nodes nearest the root (snapshot order is breadth-first from it)."""
    if max_nodes <= 0 or len(nodes) <= max_nodes:
        return nodes, edges, 0
    kept = nodes[:max_nodes]
    ids = {n.id for n in kept}
    return kept, [e for e in edges if e[0] in ids and e[1] in ids], len(nodes) - max_nodes


def cuts_of(trace: Trace, names: Names) -> list[Cut]:
    """Every recorded op through which a tracked value left autograd."""
    out = []
    for op in trace.ops:
        how = _cut_kind(op)
        if how is None:
            continue
        source = op.inputs[0]
        target = None
        if op.outputs:
            target = names.label(op.outputs[0].tid)
        out.append(Cut(
            source=source.node if source.node is not None else -source.tid,
            target=target or op.site.expr or how,
            line=op.site.line,
            code=op.site.code,
            how=how,
        ))
    return out


def _cut_kind(op: OpEvent) -> str | None:
    if not op.inputs or op.error or op.inputs[0].kind != "tensor" or not op.inputs[0].requires_grad:
        return None
    if op.scope != "<cell>" or op.func.endswith("__get__") and op.func != "data.__get__":
        return None  # library internals (an optimizer's step) and attribute reads are not the user's cuts
    how = CUT_FUNCS.get(op.func)
    if how is not None:
        return how
    if not op.grad_enabled and op.outputs and not op.inplace:
        return "no_grad"
    return None


def renumber(graphs: list[Graph]) -> list[Graph]:
    """Number nodes 1, 2, ... in order of appearance, so ids do not depend on what else the session holds."""
    numbers: dict[int, int] = {}

    def number(nid: int) -> int:
        if nid not in numbers:
            numbers[nid] = len(numbers) + 1
        return numbers[nid]

    out = []
    for graph in graphs:
        nodes = tuple(replace(n, id=number(n.id)) for n in graph.nodes)
        edges = tuple((number(a), number(b)) for a, b in graph.edges)
        cuts = tuple(replace(c, source=None if c.source is None else number(c.source)) for c in graph.cuts)
        memory = graph.memory and replace(graph.memory, holders=tuple(
            replace(h, node=None if h.node is None else number(h.node)) for h in graph.memory.holders))
        out.append(replace(graph, nodes=nodes, edges=edges, cuts=cuts, memory=memory))
    return out
