"""The backward replay: each recorded backward's steps, named and explained, as report rows."""

from __future__ import annotations

from dataclasses import replace

from ..report.model import Flow, Graph, Replay, Step, Value
from ..trace.events import BackwardEvent, GraphNode, ReplayStep, TensorValue
from .formulas import ACCUMULATE, edge_formula, value_text, words_for
from .naming import Names
from .nonfinite import IN_BACKWARD

MAX_DETAILED_CALLS = 3  # see capture.backward.MAX_BACKWARD_DETAIL: later calls at a line are not replayed


def value_row(value: TensorValue | None) -> Value | None:
    if value is None:
        return None
    return Value(value.shape, value.values, value.norm, value.low, value.high)


def build_replay(event: BackwardEvent, graph_index: int | None, graph: Graph | None, names: Names,
                 marks: dict[int, str] | None = None) -> Replay:
    """The report's replay of one backward call; node ids are the graph's (before renumbering).
    ``marks``: where the non-finite diagnostic's values started (see nonfinite.marks)."""
    raw = {n.nid: n for n in event.graph.nodes} if event.graph else {}
    shown = _shown_ids(graph, raw)
    steps: list[Step] = []
    received: dict[int, list[tuple[Value | None, str]]] = {}
    for number, step in enumerate(event.steps, 1):
        node = raw.get(step.nid)
        name = names.label(node.tid) if node is not None and node.tid is not None else None
        made = _step(number, step, node, name, shown.get(step.nid), raw, names, received)
        mark = (marks or {}).get(step.nid, "carried")
        steps.append(made if mark == "carried" else replace(made, words=f"{made.words} {_started(mark)}"))
    root = names.label(event.root.tid) if event.root else None
    return Replay(graph_index, event.func, event.site.line, root, tuple(steps), event.steps_dropped,
                  _notes(event, graph))


def _step(number: int, step: ReplayStep, node: GraphNode | None, name: str | None, shown: int | None,
          raw: dict[int, GraphNode], names: Names, received: dict[int, list[tuple[Value | None, str]]]) -> Step:
    arrived = tuple(value_row(v) for v in step.arrived)
    who = f"{name} ({step.label})" if name else step.label
    flows = []
    for edge, (target, sent) in enumerate(step.sent):
        to = _name_of(raw.get(target), names)
        value = value_row(sent)
        received.setdefault(target, []).append((value, who))
        flows.append(Flow(to, target, value, edge_formula(step.label, edge, to, arrived[0] if arrived else None,
                                                          value)))
    if step.label == ACCUMULATE:
        flows.append(_accumulated(name or "the leaf", arrived, step))
    site = node.site if node is not None else None
    code = (site.expr or site.code) if site else ""
    return Step(number, shown, step.label, name, site.line if site else None, code,
                arrived, tuple(flows), words_for(step.label), _summed(received.get(step.nid, []), arrived),
                value_row(step.before), value_row(step.after))


def _started(kind: str) -> str:
    """The replay's word on the node where the reported nan/inf started."""
    if kind.endswith(IN_BACKWARD):
        return (f"⚠ Here the gradient became {kind.split()[0]}: what arrived was finite, what it sent is not "
                "(its derivative, not its forward values; see the non-finite diagnostic).")
    return f"⚠ The {kind} started here, in the forward pass (see the non-finite diagnostic)."


def _accumulated(name: str, arrived: tuple[Value | None, ...], step: ReplayStep) -> Flow:
    got = value_text(arrived[0]) if arrived else "?"
    after = value_row(step.after)
    if step.before is None:
        return Flow(f"{name}.grad", None, after, f"{name}.grad = {got} (it was None)")
    return Flow(f"{name}.grad", None, after,
                f"{name}.grad = {value_text(value_row(step.before))} + {got} = {value_text(after)}")


def _summed(parts: list[tuple[Value | None, str]], arrived: tuple[Value | None, ...]) -> str:
    """How gradients from several paths met at this node (the engine adds them before the node runs)."""
    if len(parts) < 2:
        return ""
    terms = " + ".join(f"{value_text(v)} (from {who})" for v, who in parts)
    return f"{terms} = {value_text(arrived[0]) if arrived else '?'}"


def _name_of(node: GraphNode | None, names: Names) -> str:
    if node is None:
        return "input"
    name = names.label(node.tid) if node.tid is not None else None
    return (name or node.label).split(", ")[0]


def _shown_ids(graph: Graph | None, raw: dict[int, GraphNode]) -> dict[int, int]:
    """Snapshot node id -> the drawn node that stands for it (a folded group stands for its members)."""
    if graph is None:
        return {}
    drawn = {n.id: n.id for n in graph.nodes}
    groups = {(n.label, n.line): n.id for n in graph.nodes if n.repeat > 1}
    by_label: dict[str, list[int]] = {}
    for n in graph.nodes:
        if n.repeat > 1:
            by_label.setdefault(n.label, []).append(n.id)
    for nid, node in raw.items():
        line = node.site.line if node.site else None
        group = groups.get((node.label, line))
        if group is None and line is None and len(by_label.get(node.label, [])) == 1:
            group = by_label[node.label][0]  # past the recording cap: folded with its class's one group
        if nid not in drawn and group is not None:
            drawn[nid] = group
    return drawn


def _notes(event: BackwardEvent, graph: Graph | None) -> tuple[str, ...]:
    notes = []
    if event.calls > MAX_DETAILED_CALLS:
        notes.append(f"this line ran backward {event.calls} times; its first {MAX_DETAILED_CALLS} calls are replayed")
    if event.steps_dropped:
        notes.append(f"{event.steps_dropped} later steps were counted, not recorded (cap {len(event.steps)})")
    if graph is not None and graph.folded:
        notes.append(f"{graph.folded} repeated nodes are drawn as one ×N box; their steps are listed one by one "
                     "and highlight the box")
    return tuple(notes)
