"""Where the cell's first nan/inf started: followed through the recorded ops, and through the backward replay.

Pure functions of the `Trace`. Forward: every op capture saw make a non-finite value either started
it (an *origin*: its inputs did not hold that kind of value) or carried it from an input. An origin is
*computed* (log of 0, 0/0, exp overflow, ...) or *written* (a nan/inf the code passed in on purpose:
``masked_fill(mask, -inf)``, ``torch.tensor(float('inf'))``, data from outside autograd, a GradScaler's
scaled loss). Only a computed origin whose values reach something that matters is reported: a loss
that backward started from, or a named result that no later op used (a used one matters through what
was made from it: a ``-inf`` that a softmax turns into 0, or a nan a ``torch.where`` drops, reaches
nothing). Backward: the first replay
step that sent a non-finite gradient while the one that arrived was finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..report.model import flatten
from ..trace.events import BackwardEvent, GraphNode, OpEvent, ReplayStep, TensorValue, Trace

IN_BACKWARD = "(backward)"  # a mark's suffix: the node's derivative made it, not its forward values
BEFORE = 0  # the origin of values the cell did not make (earlier cells, unrecorded ops)
_BACKWARD_FUNCS = frozenset({"backward", "grad"})


@dataclass(frozen=True)
class Origin:
    op: OpEvent
    computed: bool
    kind: str  # "nan", "inf" or "-inf": what it started


@dataclass
class Spread:
    """How non-finite values moved through the recorded ops."""

    origins: dict[int, Origin] = field(default_factory=dict)  # op seq -> the origin it is
    carried: dict[int, int] = field(default_factory=dict)  # tid -> origin seq, for every non-finite output
    producer: dict[int, OpEvent] = field(default_factory=dict)  # tid -> the op that last wrote it
    reached: dict[int, str] = field(default_factory=dict)  # origin seq -> the first thing it reached
    roots: set[int] = field(default_factory=set)  # seqs of origins that reached a backward's loss

    def first_reaching(self) -> Origin | None:
        """The earliest computed origin whose values reached a loss, a gradient or a named result."""
        found = sorted(seq for seq in self.reached if seq in self.origins and self.origins[seq].computed)
        return self.origins[found[0]] if found else None


def spread_of(trace: Trace) -> Spread:
    """Follow non-finite values through the ops in order; note what each origin reached."""
    out = Spread()
    current: dict[int, int] = {}  # tid -> origin seq while the tensor holds non-finite values
    consumed: set[int] = set()  # tensors a later op made another tensor from
    for op in trace.ops:
        if op.error is not None:
            continue
        if op.func in _BACKWARD_FUNCS and not op.outputs:
            for root in op.inputs:
                if root.tid in current:
                    out.reached.setdefault(current[root.tid], "loss")
                    out.roots.add(current[root.tid])
            continue
        made = {info.tid for info in op.outputs}
        consumed.update(info.tid for info in op.inputs if info.tid not in made)
        if op.nonfinite is None:
            _clean(op, current)
        else:
            _carry(op, current, out)
        for info in op.outputs:
            out.producer[info.tid] = op
    for name, info in trace.final.items():
        if info.tid in current and info.tid not in consumed:  # a used value matters through what it made
            out.reached.setdefault(current[info.tid], name)
    return out


def _clean(op: OpEvent, current: dict[int, int]) -> None:
    """A finite floating output: its tensor is finite now (an in-place fix), and a nan it read was dropped."""
    for info in op.outputs:
        current.pop(info.tid, None)
    if any("float" in info.dtype for info in op.outputs):
        for info in op.inputs:
            current.pop(info.tid, None)  # consumed into a finite value: masked, cleaned or reduced away


def _carry(op: OpEvent, current: dict[int, int], out: Spread) -> None:
    nf = op.nonfinite
    assert nf is not None
    sources: list[int] = []
    nan_in = False
    for index, info in enumerate(op.inputs):
        stats = nf.inputs[index] if index < len(nf.inputs) else None
        if stats is not None and not stats.finite:
            sources.append(current.get(info.tid, BEFORE))
            nan_in = nan_in or stats.nan > 0
        elif stats is None and info.tid in current:
            sources.append(current[info.tid])
            known = out.origins.get(current[info.tid])
            nan_in = nan_in or (known is not None and known.kind == "nan")
    computed = [s for s in sources if s in out.origins and out.origins[s].computed]
    kind = "nan" if nf.output.nan else ("inf" if nf.output.posinf else "-inf")
    if computed:
        origin = min(computed)
    elif nf.written:
        origin = _start(op, False, kind, out)
    elif nf.output.nan and not nan_in or not sources:
        origin = _start(op, True, kind, out)  # inf - inf, 0 * inf: a nan the op made from written infinities
    else:
        origin = min(sources)
    for info in op.outputs:
        if "float" in info.dtype or "complex" in info.dtype:
            current[info.tid] = origin
            out.carried[info.tid] = origin
    if op.inplace and op.inputs:
        current[op.inputs[0].tid] = origin
        out.carried[op.inputs[0].tid] = origin


def _start(op: OpEvent, computed: bool, kind: str, out: Spread) -> int:
    out.origins[op.seq] = Origin(op, computed, kind)
    return op.seq


# -- values ---------------------------------------------------------------------------------------
def is_finite(value: TensorValue | None) -> bool | None:
    """Whether a recorded value is finite; None when capture kept too little of it to tell."""
    if value is None:
        return None
    if value.values is not None:
        return all(not isinstance(v, float) or math.isfinite(v) for v in flatten(value.values))
    numbers = [n for n in (value.norm, value.low, value.high) if n is not None]
    return all(math.isfinite(n) for n in numbers) if numbers else None


def kind_of(value: TensorValue | None) -> str:
    """"nan" or "inf" (the first one a value holds), "" when finite or unknown."""
    if value is None:
        return ""
    numbers = list(flatten(value.values)) if value.values is not None else [value.norm, value.low, value.high]
    floats = [n for n in numbers if isinstance(n, float)]
    if any(n != n for n in floats):
        return "nan"
    return "inf" if any(n in (math.inf, -math.inf) for n in floats) else ""


# -- backward -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackwardOrigin:
    event: BackwardEvent
    step: ReplayStep
    node: GraphNode | None
    consumers: tuple[str, ...]  # the classes of the nodes it got its gradient from (WhereBackward0, ...)
    kind: str


def backward_origin(trace: Trace) -> BackwardOrigin | None:
    """The first replay step that sent a nan/inf gradient while every gradient that arrived was finite."""
    for event in trace.backwards:
        nodes = {n.nid: n for n in event.graph.nodes} if event.graph else {}
        for step in event.steps:
            if not all(is_finite(v) is not False for v in step.arrived):
                continue
            bad = next((v for _, v in step.sent if is_finite(v) is False), None)
            if bad is None:
                continue
            node = nodes.get(step.nid)
            return BackwardOrigin(event, step, node, _consumers(event, step.nid, nodes), kind_of(bad))
    return None


def _consumers(event: BackwardEvent, nid: int, nodes: dict[int, GraphNode]) -> tuple[str, ...]:
    edges = event.graph.edges if event.graph else ()
    return tuple(nodes[dst].label for src, dst in edges if src == nid and dst in nodes)


# -- what the graph marks -------------------------------------------------------------------------
def marks(trace: Trace) -> dict[int, str]:
    """Graph node id -> "nan"/"inf" where the reported non-finite values started, "carried" where they went.

    Forward: the origin op's node, and the nodes of the ops that carried its values. Backward: the
    node whose derivative made them, and the nodes its non-finite gradient reached after it.
    """
    spread = spread_of(trace)
    origin = spread.first_reaching()
    if origin is not None:
        return _forward_marks(trace, spread, origin)
    found = None if trace.scales else backward_origin(trace)  # a GradScaler's overflows are its own business
    return {} if found is None else _backward_marks(found)


def _forward_marks(trace: Trace, spread: Spread, origin: Origin) -> dict[int, str]:
    out: dict[int, str] = {}
    for op in trace.ops:
        for info in op.outputs:
            if info.node is not None and spread.carried.get(info.tid) == origin.op.seq:
                out.setdefault(info.node, "carried")
    for info in origin.op.outputs[:1]:
        if info.node is not None:
            out[info.node] = "nan" if origin.kind == "nan" else "inf"
    return out


def _backward_marks(found: BackwardOrigin) -> dict[int, str]:
    out = {found.step.nid: f"{found.kind or 'nan'} {IN_BACKWARD}"}
    started = False
    for step in found.event.steps:
        started = started or step is found.step
        if started and step is not found.step and any(is_finite(v) is False for v in step.arrived):
            out.setdefault(step.nid, "carried")
    return out


def origin_words(trace: Trace) -> str:
    """Where the reported nan/inf started, as a clause for other answers: "at line 3, `torch.log(x)` (log)"."""
    origin = spread_of(trace).first_reaching()
    if origin is not None:
        site = origin.op.site
        return f"in the forward pass at line {site.line}, `{site.expr or site.code}` ({origin.op.func})"
    found = None if trace.scales else backward_origin(trace)
    if found is None:
        return ""
    back = found.node.site if found.node is not None else None
    where = f" of `{back.expr or back.code}` at line {back.line}" if back is not None and back.line else ""
    return f"in backward, at {found.step.label}{where}: its derivative, not its forward values"
