"""Build the `Report` from a `Trace`: tables, named graphs and diagnostics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace

from ..report.model import ErrorRow, GradRow, Graph, OpRow, Replay, Report, Step, TensorRow, Value
from ..trace.events import BackwardEvent, GraphSnapshot, Trace
from ..trace.names import base_name, identifiers
from .graphs import build_graph, cuts_of, renumber
from .modules import node_modules, with_modules
from .naming import Names, name_tensors
from .nonfinite import marks
from .registry import TRAINING_KINDS, analyze
from .replay import build_replay, value_row
from .training import build_training
from .unwatched import note_unwatched, with_unwatched_error
from .why import why_answers

DEFAULT_MAX_NODES = 150
Folds = Mapping[int, tuple[frozenset[str], frozenset[str]]]  # graph index -> (opened, closed) modules
MAX_OP_ROWS = 2000  # the report lists at most this many ops; ops_total counts them all
MAX_EXTRA_GRAPHS = 6  # graphs of named results that were never backwarded


def build_report(trace: Trace, *, max_nodes: int = DEFAULT_MAX_NODES, graphs: bool = True,
                 depth: int | None = None, folds: Folds | None = None) -> Report:
    """``depth``: draw modules nested deeper than this many levels as one node each (None: every op).
    ``folds``: per graph index, the modules (opened, closed) by clicks in the widget."""
    trace = with_unwatched_error(trace)
    names = name_tensors(trace)
    used = identifiers(trace.source) | _backwarded_names(trace, names)
    report = Report(source=trace.source, first_line=trace.first_line)
    report.tensors = _tensor_rows(trace, names, used)
    report.gradients = {n: GradRow(n, g.shape, g.values, g.norm, g.before, g.source)
                        for n, g in trace.gradients.items() if _shown(n, used)}
    if graphs:
        built = _marked(_graphs(trace, names, report.gradients, max_nodes, depth, folds or {}), marks(trace))
        report.graphs = [with_modules(g, trace.modules) for g in renumber(built)]
        report.backward_steps = _replays(trace, names, built, report.graphs)
    report.answers = why_answers(trace, names, report.gradients, report.backward_steps, cuts_of(trace, names),
                                 list(report.tensors))
    report.ops = [OpRow(op.seq, op.func, op.site.line, op.site.code, op.inplace, op.site.expr)
                  for op in trace.ops[:MAX_OP_ROWS]]
    report.ops_total = trace.total_ops
    report.ops_folded = trace.folded_ops
    report.ops_unwatched_steps = trace.unwatched_steps
    report.loop_left_after, report.loop_unwatched = trace.loop_left_after, trace.loop_unwatched
    if trace.error is not None:
        report.error = ErrorRow(trace.error.type, trace.error.message, trace.error.site.line, trace.error.site.code)
    report.diagnostics = note_unwatched(analyze(trace, names), trace)
    report.training = build_training(trace.training, report.diagnostics, TRAINING_KINDS)
    report.torchviz_dot = trace.torchviz
    return report


def _marked(graphs: list[Graph], found: dict[int, str]) -> list[Graph]:
    """Mark the nodes where the non-finite diagnostic's values started and went (see nonfinite.marks)."""
    if not found:
        return graphs
    return [replace(g, nodes=tuple(replace(n, nonfinite=found[n.id]) if n.id in found else n for n in g.nodes))
            for g in graphs]


def _shown(name: str, used: AbstractSet[str]) -> bool:
    """Show a name the cell used: 'x', or 'model.0.weight' when the cell mentions model."""
    return base_name(name) in used


def _backwarded_names(trace: Trace, names: Names) -> set[str]:
    """Names of the leaves this cell's backward calls wrote gradients into."""
    found: set[str] = set()
    for event in trace.backwards:
        for grad in event.leaf_grads:
            found.update(base_name(n) for n in names.all(grad.tid))
    return found


def _tensor_rows(trace: Trace, names: Names, used: AbstractSet[str]) -> dict[str, TensorRow]:
    rows = {}
    for name, info in trace.final.items():
        if not _shown(name, used):
            continue
        kind = "parameter" if name in names.qualified else info.kind
        rows[name] = TensorRow(name, info.shape, info.dtype, info.device, info.requires_grad, info.is_leaf,
                               info.grad_fn, names.line_of.get(name), kind)
    return rows


def _graphs(trace: Trace, names: Names, grads: dict[str, GradRow], max_nodes: int,
            depth: int | None, folds: Folds) -> list[Graph]:
    cuts = cuts_of(trace, names)
    steps = {out.node: op.seq for op in trace.ops for out in op.outputs if out.node is not None}
    out: list[Graph] = []
    covered: set[int] = set()
    for event in trace.backwards:
        if event.graph is not None:
            covered.update(n.nid for n in event.graph.nodes)
    shown = per_site(trace.backwards)
    for event, graph in ((e, e.graph) for e in shown if e.graph is not None):
        root = (names.label(event.root.tid) if event.root else None) or _receiver(event)
        out.append(build_graph(graph, names, grads, root_name=root, site=event.site, backward=True,
                               calls=event.calls, cuts=cuts, max_nodes=max_nodes, steps=steps,
                               modules=node_modules(trace, names, graph), depth=depth, classes=trace.modules,
                               folds=folds.get(len(out)), seed=_seed(event)))
    drawn = {(shape_of(e.graph), _root_line(e.graph)) for e in shown if e.graph is not None}
    extra = [s for s in _unbackwarded(trace.graphs, covered) if not _repeats(s, drawn)]
    for snap in extra[:MAX_EXTRA_GRAPHS]:
        out.append(build_graph(snap, names, grads, root_name=names.label(snap.root), site=None, backward=False,
                               calls=0, cuts=cuts, max_nodes=max_nodes, steps=steps,
                               modules=node_modules(trace, names, snap), depth=depth, classes=trace.modules,
                               folds=folds.get(len(out))))
    return out


def _seed(event: BackwardEvent) -> Value | None:
    """The gradient that reached the root in the drawn call (1 for ``loss.backward()``), when replayed."""
    root = event.graph.nodes[0].nid if event.graph and event.graph.nodes else None
    arrived = next((s.arrived for s in event.steps if s.nid == root), ())
    return value_row(arrived[0]) if arrived else None


_RECEIVER = re.compile(r"\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.backward\(")


def _receiver(event: BackwardEvent) -> str | None:
    """``loss`` in ``loss.backward()``: the root's name when no assignment bound it (``loss = F.mse_loss(...)``
    runs its ops inside torch, and in a loop only the last result is left in the namespace)."""
    found = _RECEIVER.match(event.site.expr) if event.func == "backward" else None
    if found is None or found.group(1).split(".")[-1] == "autograd":  # torch.autograd.backward(loss): no receiver
        return None
    return found.group(1)


def per_site(events: tuple[BackwardEvent, ...]) -> list[BackwardEvent]:
    """One backward per call site, in order of first call, with the last snapshot capture took there."""
    last: dict[tuple[int | None, int | None, str], BackwardEvent] = {}
    for event in events:
        if event.graph is not None and event.graph.nodes:
            last[(event.site.cell, event.site.line, event.site.code)] = event  # a dict keeps the first position
    return list(last.values())


Shape = tuple[tuple[tuple[str, tuple[int, ...]], ...], frozenset[tuple[int, int]]]


def shape_of(snap: GraphSnapshot) -> Shape:
    """A graph's structure without ids or sites (a loop's late iterations are past the recording cap, unsited)."""
    index = {n.nid: i for i, n in enumerate(snap.nodes)}
    nodes = tuple((n.label, n.shape) for n in snap.nodes)
    return nodes, frozenset((index[a], index[b]) for a, b in snap.edges if a in index and b in index)


def _root_line(snap: GraphSnapshot) -> int | None:
    root = snap.nodes[0] if snap.nodes else None
    return root.site.line if root is not None and root.site is not None else None


def _repeats(snap: GraphSnapshot, drawn: set[tuple[Shape, int | None]]) -> bool:
    """Built like a backwarded graph at the same line (or past the recording cap, where lines are unknown)."""
    shape, line = shape_of(snap), _root_line(snap)
    return any(shape == other and line in (None, other_line) for other, other_line in drawn)


def _unbackwarded(snaps: tuple[GraphSnapshot, ...], covered: set[int]) -> list[GraphSnapshot]:
    """Graphs of named results, dropping any whose root lies inside another shown graph."""
    inside = set(covered)
    for snap in snaps:
        inside.update(n.nid for n in snap.nodes[1:])
    kept: dict[int, GraphSnapshot] = {}  # one per root: a named result may also be a cut's graph
    for snap in snaps:
        if snap.nodes and snap.nodes[0].nid not in inside:
            kept.setdefault(snap.nodes[0].nid, snap)
    return list(kept.values())


def _replays(trace: Trace, names: Names, built: list[Graph], numbered: list[Graph]) -> list[Replay]:
    """Each detailed backward's steps, pointing at its graph (the order `_graphs` drew them in)."""
    ids = {a.id: b.id for old, new in zip(built, numbered, strict=True)
           for a, b in zip(old.nodes, new.nodes, strict=True)}
    drawn = {id(event): i for i, event in enumerate(per_site(trace.backwards)) if i < len(built)}
    found = marks(trace)
    out = []
    for event in trace.backwards:
        index = drawn.get(id(event))  # one graph per call site: the other calls there replay without a drawing
        graph = built[index] if index is not None else None
        if event.steps:
            replay = build_replay(event, index, graph, names, found)
            out.append(replace(replay, steps=tuple(_renumbered(s, ids) for s in replay.steps)))
    return out


def _renumbered(step: Step, ids: dict[int, int]) -> Step:
    """A step in the graphs' display numbering; a node that is not drawn has none."""
    sent = tuple(replace(f, node=ids.get(f.node) if f.node is not None else None) for f in step.sent)
    return replace(step, node=ids.get(step.node) if step.node is not None else None, sent=sent)
