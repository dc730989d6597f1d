"""The plain-text view: terminal IPython, logs, and every output's text/plain.

Names, code and messages are the notebook's own text: `escape.terminal_text` shows any
control character in them as an escape. Line numbers are the report's own (the cell body's);
diagnostic messages keep their `backtick` code spans, which read as code in plain text.
"""

from __future__ import annotations

from itertools import groupby, islice
from typing import Any

from ..report.model import GradRow, Graph, Node, Replay, Report, Value, flatten
from .escape import terminal_text
from .saved import memory_lines
from .training import training_text

MAX_LISTED = 12  # values shown per gradient before "..."
MAX_TEXT_STEPS = 12  # replay steps listed per backward; a long replay shows its first and last ones
MAX_INLINE_GRAD = 4  # a gradient with at most this many values is shown as values, not as a norm


def render_text(report: Report) -> str:
    """The whole text view, through `escape.terminal_text`: nothing in it is a terminal control."""
    parts = [summary_line(report)]
    parts += [f"  hint: {hint}" for hint in report.hints]
    for section in (_diagnostics, _variables, _gradients, _training, _graphs, _replays, _error):
        lines = section(report)
        if lines:
            parts.append("")
            parts.extend(lines)
    return terminal_text("\n".join(parts))


def summary_line(report: Report) -> str:
    counts = {sev: sum(d.severity == sev for d in report.diagnostics) for sev in ("error", "warning", "note")}
    found = ", ".join(f"{n} {sev}{'s' if n != 1 else ''}" for sev, n in counts.items() if n) or "no diagnostics"
    calls = plural(report.ops_total, "torch call") + (f" ({unwatched(report)})" if report.ops_unwatched_steps else "")
    counted = ", ".join([calls, plural(len(report.tensors), "tensor"), plural(len(report.graphs), "graph")])
    return f"autograd: {counted}, {found}"


def unwatched(report: Report) -> str:
    """What the call count leaves out: a training loop's steps after its recorded ones, run unwatched, and
    the insides of a torch optimizer's later steps (``--every-step``)."""
    said = []
    if report.loop_unwatched and report.loop_left_after is not None:
        first, last = report.loop_left_after + 1, report.loop_left_after + report.loop_unwatched
        steps = f"step {first:,}" if first == last else f"steps {first:,}–{last:,}"
        said.append(f"{steps} ran unwatched: loss and gradient norms kept, their torch calls not counted")
    inside = report.ops_unwatched_steps - report.loop_unwatched
    if inside > 0 and said:  # the loop was left at a step's pre-hook: that step ran unwatched, its backward seen
        said.append(f"so did the optimizer step of step {report.loop_left_after:,}")
        inside -= 1
    if inside > 0:
        said.append(f"not counting the insides of {plural(inside, 'later optimizer step')}")
    return "; ".join(said)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _diagnostics(report: Report) -> list[str]:
    if not report.diagnostics:
        return []
    out = ["Diagnostics"]
    for d in report.diagnostics:
        where = f"line {d.line}" if d.line is not None else "cell"
        out.append(f"  {d.severity.upper()} [{d.kind}] {where}: {d.code}".rstrip(": "))
        out.extend(f"    {line}" for line in d.message.splitlines())
    return out


def _training(report: Report) -> list[str]:
    return training_text(report.training)


def _variables(report: Report) -> list[str]:
    if not report.tensors:
        return []
    rows: list[tuple[str, ...]] = [("name", "shape", "dtype", "requires_grad", "is_leaf", "grad_fn", "line")]
    for row in report.tensors.values():
        rows.append((row.name, shape_text(row.shape), row.dtype + ("" if row.kind != "ndarray" else " (numpy)"),
                     str(row.requires_grad), str(row.is_leaf), row.grad_fn or "-", _line(row.line)))
    return ["Variables", *_table(rows)]


def _gradients(report: Report) -> list[str]:
    if not report.gradients:
        return []
    out = ["Gradients"]
    for row in report.gradients.values():
        kind = "" if row.source == "leaf" else "  (intermediate, from backward)"
        out.append(f"  {row.name}: {format_values(row.values, row.shape)}  norm={row.norm:.4g}{kind}")
        if row.before is not None:
            out.append(f"    before this backward: {format_values(row.before, row.shape)}")
    return out


def _graphs(report: Report) -> list[str]:
    out: list[str] = []
    for index, graph in enumerate(report.graphs, 1):
        out.append(graph_title(graph, index))
        out.extend(_graph_lines(graph, report.gradients))
        out.extend(f"  {line}" for line in memory_lines(graph))
    return out


def graph_title(graph: Graph, index: int) -> str:
    what = f"backward at line {graph.line}" if graph.backward else "no backward() from it in this cell"
    root = next((n for n in graph.nodes if n.kind == "root"), None)
    if root is not None and root.cell is not None:  # e.g. its graph was used (and freed) by an earlier cell
        what = f"built in In [{root.cell}], {what}"
    calls = f", {graph.calls} calls" if graph.calls > 1 else ""
    extra = []
    if graph.folded:
        extra.append(f"{graph.folded} repeated nodes folded")
    if graph.dropped:
        extra.append(f"{graph.dropped} nodes left out (--max-nodes)")
    more = f" [{'; '.join(extra)}]" if extra else ""
    return f"Graph {index}: root {graph.root or '(unnamed)'} ({what}{calls}), {len(graph.nodes)} nodes{more}"


def _graph_lines(graph: Graph, grads: dict[str, GradRow]) -> list[str]:
    inputs: dict[int, list[int]] = {}
    for src, dst in graph.edges:
        inputs.setdefault(dst, []).append(src)
    by_id = {n.id: n for n in graph.nodes}
    out = []
    for node in graph.nodes:
        facts = "  ".join(f for f in (node_value(node), node_gradient(node, grads)) if f)
        label = node_text(node, grad=facts)
        feeds = ", ".join(node_text(by_id[i], short=True) for i in inputs.get(node.id, []) if i in by_id)
        out.append(f"  {label}" + (f"  <- {feeds}" if feeds else ""))
    for cut in graph.cuts:
        origin = by_id.get(cut.source) if cut.source is not None else None
        came_from = node_text(origin, short=True) if origin else "?"
        out.append(f"  ✂ {cut.how} at line {cut.line}: {came_from} -/-> {cut.target}")
    return _collapse_runs(out)


def _collapse_runs(lines: list[str]) -> list[str]:
    """A chain the fold did not catch prints as one line with its count, not hundreds of copies."""
    out: list[str] = []
    for line, run in ((k, len(list(g))) for k, g in groupby(lines)):
        out.append(line if run == 1 else f"{line}  (same line ×{run})")
    return out


def node_text(node: Any, short: bool = False, grad: str = "") -> str:
    name = f"{node.name} " if node.name else ""
    if short:
        return f"{name}{node.label}".strip()
    if node.kind == "module":
        return f"{name}{', '.join(module_facts(node))} (folded module)"
    cell = f"In [{node.cell}] " if getattr(node, "cell", None) is not None else ""
    where = f" ({cell}line {node.line}: {node.expr or node.code})" if node.line is not None else ""
    repeat = f" ×{node.repeat}" if node.repeat > 1 else ""
    grad = f" {grad}" if grad else ""
    return f"{name}{node.label}{repeat} {shape_text(node.shape)}{where}{grad}".strip()


def node_gradient(node: Node, grads: dict[str, GradRow]) -> str:
    """`grad = -1`, `grad = [1, 2, 3]` for a few values (as micrograd draws them), else the norm."""
    row = grads.get((node.name or "").split(", ")[0])
    flat = [] if row is None or row.values is None else list(islice(flatten(row.values), MAX_INLINE_GRAD + 1))
    if row is not None and row.values is not None and len(flat) <= MAX_INLINE_GRAD:
        shown = _number(flat[0]) if len(flat) == 1 else "[" + ", ".join(map(_number, flat)) + "]"
        return f"grad = {shown}"
    if row is None and node.grad is not None:  # the drawn call's own (a loop's earlier root: its seed)
        text = value_text(node.grad)
        return f"grad {text}" if text.startswith("(") else f"grad = {text}"
    norm = row.norm if row is not None else node.grad_norm
    return "" if norm is None else f"grad norm = {norm:.4g}"


def node_value(node: Node) -> str:
    """`value = 12`, `value = [1, 2]`, or `value (100, 10) norm 3.2 in [-1, 1]`: what the cell computed there."""
    if node.value is None:
        return ""
    text = value_text(node.value)
    return f"value {text}" if text.startswith("(") else f"value = {text}"


def value_text(value: Value | None) -> str:
    """``-1``, ``[1, 2, 3]``, or ``(100, 10) norm 3.2 in [-0.5, 0.9]``."""
    if value is None:
        return "?"
    if value.values is not None:
        flat = list(flatten(value.values))
        return _number(flat[0]) if len(flat) == 1 else "[" + ", ".join(map(_number, flat)) + "]"
    if value.norm is None:
        return f"{shape_text(value.shape)} (values not read)"
    span = f" in [{_number(value.low)}, {_number(value.high)}]" if value.low is not None else ""
    return f"{shape_text(value.shape)} norm {_number(value.norm)}{span}"


def _replays(report: Report) -> list[str]:
    out: list[str] = []
    for index, replay in enumerate(report.backward_steps, 1):
        out.append(replay_title(replay, index))
        out.extend(f"  note: {note}" for note in replay.notes)
        for step in shown_steps(replay.steps, MAX_TEXT_STEPS):
            out.extend(step_lines(step) if step is not None else
                       [f"  ... {len(replay.steps) - MAX_TEXT_STEPS} more steps (all in report.backward_steps)"])
    return out


def shown_steps(steps: tuple[Any, ...], limit: int) -> list[Any]:
    """The first and last steps of a long replay, None where the rest are left out."""
    if len(steps) <= limit:
        return list(steps)
    tail = limit // 4
    return [*steps[:limit - tail], None, *steps[len(steps) - tail:]]


def replay_title(replay: Replay, index: int) -> str:
    root = f"{replay.root}." if replay.root and replay.func == "backward" else ""
    call = f"{root}{replay.func}()" + (f" at line {replay.line}" if replay.line is not None else "")
    capped = f" (+{replay.dropped} not recorded)" if replay.dropped else ""
    return f"Backward replay {index}: {call}, {plural(len(replay.steps), 'step')}{capped}"


def step_lines(step: Any) -> list[str]:
    """One replay step: the node, what arrived (and how several paths summed), what it did, what it sent."""
    what = f" ({step.name} = {step.code})" if step.name and step.code else (f" ({step.name})" if step.name else "")
    arrived = ", ".join(value_text(v) for v in step.arrived) or "-"
    out = [f"  {step.number}. {step.label}{what}: gradient arrived {arrived}"]
    if step.summed:
        out.append(f"       summed over paths: {step.summed}")
    out.append(f"       {step.words}")
    out.extend(f"       {flow.formula or f'grad_{flow.to} = {value_text(flow.value)}'}" for flow in step.sent)
    return out


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and not isinstance(value, bool) else str(value)


def _error(report: Report) -> list[str]:
    if report.error is None:
        return []
    e = report.error
    return [f"The cell raised {e.type} at line {_line(e.line)}: {e.message.splitlines()[0] if e.message else ''}"]


def format_values(values: Any, shape: tuple[int, ...]) -> str:
    if values is None:
        return f"<{shape_text(shape)} values not listed>"
    flat = list(islice(flatten(values), MAX_LISTED + 1))  # a 1,000-element gradient shows its first few
    shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat[:MAX_LISTED])
    more = ", ..." if len(flat) > MAX_LISTED else ""
    return f"[{shown}{more}]" if shape else shown


def module_facts(node: Node) -> list[str]:
    """What a folded module is: ``Linear ×3``, ``34 params`` (none for ReLU), ``out (64, 2)`` (none when
    no output of it is drawn: its node has no dtype then)."""
    what = node.label + (f" ×{node.repeat}" if node.repeat > 1 else "")
    params = f"{count_text(node.params)} params" if node.params else ""
    out = f"out {shape_text(node.shape)}" if node.dtype else ""
    return [x for x in (what, params, out) if x]


def count_text(count: int) -> str:
    """``34``, ``12.3k``, ``4.1M``: a parameter count at a glance."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def shape_text(shape: tuple[int, ...]) -> str:
    """`(3, 2)`, or `scalar` for a 0-d tensor: how every view writes a shape."""
    return "(" + ", ".join(map(str, shape)) + ")" if shape else "scalar"


def _line(line: int | None) -> str:
    return "-" if line is None else str(line)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
