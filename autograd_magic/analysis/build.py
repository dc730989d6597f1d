"""Build the `Report` from a `Trace`: tables, named graphs and diagnostics."""

from __future__ import annotations

from ..report.model import ErrorRow, GradRow, Graph, OpRow, Report, TensorRow
from ..trace.events import GraphSnapshot, Trace
from ..trace.names import base_name, identifiers
from .graphs import build_graph, cuts_of, renumber
from .modules import node_modules, with_modules
from .naming import Names, name_tensors
from .registry import TRAINING_KINDS, analyze
from .training import build_training

DEFAULT_MAX_NODES = 150
MAX_OP_ROWS = 2000  # the report lists at most this many ops; ops_total counts them all
MAX_EXTRA_GRAPHS = 6  # graphs of named results that were never backwarded


def build_report(trace: Trace, *, max_nodes: int = DEFAULT_MAX_NODES, graphs: bool = True,
                 depth: int | None = None) -> Report:
    """``depth``: draw modules nested deeper than this many levels as one node each (None: every op)."""
    names = name_tensors(trace)
    used = identifiers(trace.source) | _backwarded_names(trace, names)
    report = Report(source=trace.source, first_line=trace.first_line)
    report.tensors = _tensor_rows(trace, names, used)
    report.gradients = {n: GradRow(n, g.shape, g.values, g.norm, g.before, g.source)
                        for n, g in trace.gradients.items() if _shown(n, used)}
    if graphs:
        drawn = renumber(_graphs(trace, names, report.gradients, max_nodes, depth))
        report.graphs = [with_modules(g, trace.modules) for g in drawn]
    report.ops = [OpRow(op.seq, op.func, op.site.line, op.site.code, op.inplace, op.site.expr)
                  for op in trace.ops[:MAX_OP_ROWS]]
    report.ops_total = trace.total_ops
    report.ops_folded = trace.folded_ops
    if trace.error is not None:
        report.error = ErrorRow(trace.error.type, trace.error.message, trace.error.site.line, trace.error.site.code)
    report.diagnostics = analyze(trace, names)
    report.training = build_training(trace.training, report.diagnostics, TRAINING_KINDS)
    report.torchviz_dot = trace.torchviz
    return report


def _shown(name: str, used: set[str]) -> bool:
    """Show a name the cell used: 'x', or 'model.0.weight' when the cell mentions model."""
    return base_name(name) in used


def _backwarded_names(trace: Trace, names: Names) -> set[str]:
    """Names of the leaves this cell's backward calls wrote gradients into."""
    found: set[str] = set()
    for event in trace.backwards:
        for grad in event.leaf_grads:
            found.update(base_name(n) for n in names.all(grad.tid))
    return found


def _tensor_rows(trace: Trace, names: Names, used: set[str]) -> dict[str, TensorRow]:
    rows = {}
    for name, info in trace.final.items():
        if not _shown(name, used):
            continue
        kind = "parameter" if name in names.qualified else info.kind
        rows[name] = TensorRow(name, info.shape, info.dtype, info.device, info.requires_grad, info.is_leaf,
                               info.grad_fn, names.line_of.get(name), kind)
    return rows


def _graphs(trace: Trace, names: Names, grads: dict[str, GradRow], max_nodes: int,
            depth: int | None) -> list[Graph]:
    cuts = cuts_of(trace, names)
    steps = {out.node: op.seq for op in trace.ops for out in op.outputs if out.node is not None}
    out = []
    covered: set[int] = set()
    for event in trace.backwards:
        if event.graph is None or not event.graph.nodes:
            continue
        covered.update(n.nid for n in event.graph.nodes)
        root = names.label(event.root.tid) if event.root else None
        out.append(build_graph(event.graph, names, grads, root_name=root, site=event.site, backward=True,
                               calls=event.calls, cuts=cuts, max_nodes=max_nodes, steps=steps,
                               modules=node_modules(trace, names, event.graph), depth=depth, classes=trace.modules))
    for snap in _unbackwarded(trace.graphs, covered)[:MAX_EXTRA_GRAPHS]:
        out.append(build_graph(snap, names, grads, root_name=names.label(snap.root), site=None, backward=False,
                               calls=0, cuts=cuts, max_nodes=max_nodes, steps=steps,
                               modules=node_modules(trace, names, snap), depth=depth, classes=trace.modules))
    return out


def _unbackwarded(snaps: tuple[GraphSnapshot, ...], covered: set[int]) -> list[GraphSnapshot]:
    """Graphs of named results, dropping any whose root lies inside another shown graph."""
    inside = set(covered)
    for snap in snaps:
        inside.update(n.nid for n in snap.nodes[1:])
    return [s for s in snaps if s.nodes and s.nodes[0].nid not in inside]
