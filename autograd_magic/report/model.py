"""The report model: what the views show, plain data that serialises to JSON.

A `Report` is built once per cell (see `analysis.build_report`) and never
holds tensors. It renders itself in notebooks through `_repr_mimebundle_`
(text/plain and text/html) and writes itself with `save`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol

SEVERITIES = ("error", "warning", "note")


@dataclass(frozen=True)
class Diagnostic:
    """One finding: what happened at which line, to which names, and the fix."""

    kind: str
    severity: str  # "error" | "warning" | "note"
    line: int | None
    code: str
    names: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class TensorRow:
    name: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    requires_grad: bool
    is_leaf: bool
    grad_fn: str | None
    line: int | None
    kind: str = "tensor"  # "tensor" | "ndarray" | "parameter"


@dataclass(frozen=True)
class GradRow:
    name: str
    shape: tuple[int, ...]
    values: Any  # nested lists, None when the tensor is too big to list
    norm: float
    before: Any = None  # the .grad values before the last backward added to them
    source: str = "leaf"  # "leaf" (.grad) or "hook" (an intermediate's gradient)


@dataclass(frozen=True)
class Value:
    """A tensor's value or a gradient: ``values`` for a handful of elements, else norm, min and max."""

    shape: tuple[int, ...]
    values: Any = None
    norm: float | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Node:
    id: int
    label: str  # the autograd node class: MulBackward0, AccumulateGrad, ...
    name: str | None  # the user's variable
    line: int | None
    code: str
    shape: tuple[int, ...]
    kind: str  # "leaf" | "op" | "root"
    expr: str = ""
    saved: tuple[str, ...] = ()
    grad_norm: float | None = None
    step: int = 0  # op sequence number that created it (0: before the cell)
    repeat: int = 1  # >1 when this node stands for a folded run of identical nodes
    dtype: str = ""
    cell: int | None = None  # execution count of the earlier cell that made it; None: this cell
    value: Value | None = None  # what the cell computed here, read when the op ran
    module: str | None = None  # qualified name of the nn.Module whose forward made it (a "module" node: that module)
    grad: Value | None = None  # the gradient that reached it in the drawn backward call (the root's: the seed)
    params: int | None = None  # a folded module: the parameter elements of its leaves in this graph
    holds: tuple[str, ...] = ()  # a folded module: the names, node classes and modules folded into it
    nonfinite: str = ""  # "nan"/"inf" ("nan (backward)": in its derivative): the non-finite diagnostic's values
    # started here; "carried": it carries them
    saved_bytes: int = 0  # storages it saved that only the graph keeps (views of one storage count once)
    saved_apart: tuple[str, ...] = ()  # what it saved that lives anyway: parameters, leaves, the cell's variables


@dataclass(frozen=True)
class Cut:
    """A place where a value left autograd: drawn as a broken edge."""

    source: int | None  # node id the value came from, when it is in the graph
    target: str  # what the cut produced ("b", "c.detach()")
    line: int | None
    code: str
    how: str  # "detach", "numpy", "item", "torch.tensor", "no_grad", ...


@dataclass(frozen=True)
class ModuleRow:
    """An nn.Module a graph's nodes ran in: drawn as a cluster around them."""

    name: str  # qualified: encoder.layers.3.self_attn
    cls: str  # MultiheadAttention
    parent: str | None
    nodes: tuple[int, ...]  # ids of the nodes directly inside it
    repeat: int = 1  # N when this module stands for N repeated blocks (drawn once, ×N)
    label: str = ""  # the blocks it stands for: "enc.layers.0–5"


@dataclass(frozen=True)
class Holder:
    """One of the nodes (a loop's: the nodes of one class at one line) that keep the most for backward."""

    node: int | None  # the drawn node; None when folding or the cap left it out
    label: str
    name: str | None
    line: int | None
    code: str
    saved_bytes: int
    count: int = 1
    module: str | None = None  # the nn.Module they ran in, when they all ran in one


@dataclass(frozen=True)
class Memory:
    """What a graph keeps for backward: held until backward frees it (or the graph is dropped)."""

    saved_bytes: int  # distinct storages only the graph keeps
    tensors: int  # how many
    holders: tuple[Holder, ...] = ()  # the biggest five
    apart_bytes: int = 0  # saved storages that live anyway (parameters, leaves, variables), counted once
    apart: tuple[str, ...] = ()  # their names
    unread: int = 0  # nodes whose saved tensors were not read (past the read cap, or packed by a user's hook)
    in_use: int | None = None  # the process's memory on that device when the graph was taken (big graphs only)


@dataclass(frozen=True)
class Graph:
    root: str | None
    nodes: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]  # (input node, consumer node)
    cuts: tuple[Cut, ...] = ()
    line: int | None = None  # the backward call, if any
    backward: bool = False
    calls: int = 1
    folded: int = 0  # nodes folded into repeat groups
    dropped: int = 0  # nodes left out by the --max-nodes cap
    modules: tuple[ModuleRow, ...] = ()  # outermost first; empty when no node ran inside a named module
    repeated: tuple[tuple[str, int, str], ...] = ()  # (first instance, N, label) of blocks drawn once ×N
    memory: Memory | None = None  # None: the graph saved nothing it alone keeps, and nothing unread


@dataclass(frozen=True)
class Flow:
    """A gradient on one edge: sent by a step to ``node`` (its graph id when drawn), named ``to``."""

    to: str
    node: int | None
    value: Value | None
    formula: str = ""  # "grad_x = grad_out · other = 1 · 2 = 2", when the function is a common one


@dataclass(frozen=True)
class Step:
    """One node the engine ran, in order: what arrived, what it did, what it sent."""

    number: int
    node: int | None  # graph node id to highlight (a folded group's id for its members)
    label: str  # the autograd node class
    name: str | None
    line: int | None
    code: str
    arrived: tuple[Value | None, ...]
    sent: tuple[Flow, ...]
    words: str  # what the function does to gradients, in plain words
    summed: str = ""  # "1 (from var2) + -2 (from var1) = -1" when several gradients met here
    before: Value | None = None  # a leaf's .grad before this step (AccumulateGrad)
    after: Value | None = None


@dataclass(frozen=True)
class Replay:
    """The steps of one backward call, for ``graph`` (an index into ``Report.graphs``)."""

    graph: int | None
    func: str
    line: int | None
    root: str | None
    steps: tuple[Step, ...]
    dropped: int = 0  # steps past the cap, not recorded
    notes: tuple[str, ...] = ()  # what was folded or capped


@dataclass(frozen=True)
class OpRow:
    seq: int
    name: str
    line: int | None
    code: str
    inplace: bool
    expr: str = ""


@dataclass(frozen=True)
class ErrorRow:
    type: str
    message: str
    line: int | None
    code: str


@dataclass(frozen=True)
class TrainingStepRow:
    step: int
    loss: float | None
    grad_norms: dict[str, float]  # parameter -> norm of its .grad after this backward (absent: .grad was None)
    # parameter -> ||w' - w|| / ||w|| from this backward to the next (the optimizer's step); empty on
    # the last step, when nothing changed, or when the next backward was not read
    update_ratios: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Training:
    """Gradient flow across a cell's backward calls: one row per step, and the findings about it."""

    parameters: tuple[str, ...]
    steps: tuple[TrainingStepRow, ...]
    diagnostics: tuple[Diagnostic, ...] = ()
    line: int | None = None
    untracked: int = 0  # parameters past the cap, not followed
    unread: int = 0  # steps run under a profiler: not read
    stride: int = 1  # a long loop keeps every stride-th step
    calls: int = 0  # backward calls the cell made
    no_ratio: int = 0  # followed parameters too big to copy (or not real floats): no update/weight ratio
    unwatched_from: int | None = None  # steps from this one on ran unwatched: read at their optimizer step


@dataclass
class Report:
    """Everything autograd_magic learned about one cell run."""

    source: str = ""
    # every line in the report is the source's own (line 1 = the cell body's first line, as tracebacks
    # count); first_line is the editor line of line 1 (2 under %%autograd), only to map back
    first_line: int = 2
    diagnostics: list[Diagnostic] = field(default_factory=list)
    tensors: dict[str, TensorRow] = field(default_factory=dict)
    gradients: dict[str, GradRow] = field(default_factory=dict)
    graphs: list[Graph] = field(default_factory=list)
    ops: list[OpRow] = field(default_factory=list)
    ops_total: int = 0
    ops_folded: int = 0
    ops_unwatched_steps: int = 0  # torch optimizer steps whose own calls were not looked into (not in ops_total)
    loop_left_after: int | None = None  # a training loop ran unwatched after this many recorded optimizer steps
    loop_unwatched: int = 0  # its optimizer steps run unwatched (of ops_unwatched_steps): no call of theirs counted
    error: ErrorRow | None = None
    hints: list[str] = field(default_factory=list)  # one-line notes about the view itself
    torchviz_dot: str | None = None
    backward_steps: list[Replay] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # name -> why its .grad is what it is (see `why`)

    def why(self, name: str) -> str:
        """Why ``name``'s gradient is what it is (None, zero, a sum of backward calls...), in plain words.

        >>> report.why("x")
        'x.grad is None because x is not a leaf: it was made by `x.double()` at line 1 ...'
        """
        if name in self.answers:
            return self.answers[name]
        known = ", ".join(sorted(self.answers)) or "none"
        return f"{name!r} is not a tensor this cell left in a variable (known: {known})."
    training: Training | None = None  # None: the cell did not call backward more than once

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable form (see the README for the schema)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["gradients"] = {name: row.values for name, row in self.gradients.items()}
        data["gradient_details"] = dict(self.gradients)
        data["tensors"] = {name: _without(_jsonable(row), "name") for name, row in self.tensors.items()}
        return _jsonable(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        """Write the report as .json, .html or .svg (the first graph), by suffix."""
        return _views().save(self, Path(path))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return _views().mimebundle(self)

    def __repr__(self) -> str:
        counts = {s: sum(d.severity == s for d in self.diagnostics) for s in SEVERITIES}
        return (f"<autograd_magic Report: {len(self.tensors)} tensors, {len(self.graphs)} graphs, "
                f"{counts['error']} errors, {counts['warning']} warnings, {counts['note']} notes>")


def flatten(values: Any) -> Any:
    """The numbers of a value's nested lists (``Value.values``), in order; a scalar yields itself."""
    if isinstance(values, list):
        for item in values:
            yield from flatten(item)
    else:
        yield values


def size_text(nbytes: int) -> str:
    """``1.5 MiB``: memory in binary units, three significant digits (messages and views alike)."""
    size = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} TiB"


class Views(Protocol):
    """How a report is shown and saved: the views layer registers one (the model does not import its views)."""

    def mimebundle(self, report: Report) -> dict[str, str]: ...

    def save(self, report: Report, path: Path) -> Path: ...


_registered: list[Views] = []


def register_views(views: Views) -> None:
    """Called once by ``autograd_magic.views`` on import."""
    _registered[:] = [views]


def _views() -> Views:
    if not _registered:  # importing the package imports the views, so only a broken install gets here
        raise RuntimeError("autograd_magic.views is not imported: import autograd_magic first")
    return _registered[0]


_field_names: dict[type, Any] = {}  # a type -> its dataclass field names, or None when it is not one
_UNSEEN = object()


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    data.pop(key, None)
    return data


def _jsonable(value: Any) -> Any:
    """Plain JSON data in one pass (dataclasses.asdict deep-copies first: slow on 2,000 op rows)."""
    kind = type(value)
    if kind in _ATOMS:  # most leaves: return before any other test
        return value
    if kind is float:
        return value if value - value == 0 else _non_finite(value)  # inf - inf and nan - nan are nan
    names = _field_names.get(kind, _UNSEEN)
    if names is _UNSEEN:
        names = _field_names[kind] = (tuple(f.name for f in fields(value))
                                      if is_dataclass(value) and not isinstance(value, type) else None)
    if names is not None:
        return {name: _jsonable(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(type(v) in _NUMBERS_AND_ATOMS for v in value) and not any(  # a row of plain numbers: as is
                type(v) is float and v - v != 0 for v in value):
            return list(value)
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _non_finite(value) if value - value != 0 else value
    return value


_ATOMS = frozenset({str, int, bool, type(None)})
_NUMBERS_AND_ATOMS = _ATOMS | {float}


def _non_finite(value: float) -> Any:
    if value != value:  # NaN is not JSON
        return None
    return str(value) if value in (float("inf"), float("-inf")) else value
