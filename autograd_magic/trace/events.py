"""The trace: plain frozen records of what a cell did to tensors.

Capture writes these; analysis and the report read them. Nothing here imports
torch or IPython, so every later layer can be tested on hand-built traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# op func -> how a value left autograd through it (the cut's name in graphs and messages)
CUT_FUNCS = {
    "detach": "detach", "detach_": "detach", "item": "item", "tolist": "tolist", "numpy": "numpy",
    "data.__get__": ".data", "tensor": "torch.tensor", "as_tensor": "torch.as_tensor",
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """What a tensor (or a numpy array) looked like when an event touched it.

    ``tid`` is a short id stable for the object's lifetime within one cell;
    ``memory`` is the byte range ``(start, stop)`` of its storage, so that two
    objects that share memory can be found without keeping either alive.
    """

    tid: int
    kind: str = "tensor"  # "tensor" | "ndarray"
    shape: tuple[int, ...] = ()
    dtype: str = ""
    device: str = "cpu"
    requires_grad: bool = False
    is_leaf: bool = True
    grad_fn: str | None = None
    node: int | None = None  # graph node id of grad_fn, when it has one
    memory: tuple[int, int] | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class Site:
    """A place in the cell: its line (the source's own numbering, see lines.py) and text."""

    line: int | None
    code: str = ""  # the whole source line
    expr: str = ""  # the exact sub-expression, when Python can tell
    cell: int | None = None  # execution count of an earlier cell; None for the cell being reported


@dataclass(frozen=True, slots=True)
class OpEvent:
    """One torch call seen in the cell (function, method, getter or setter)."""

    seq: int
    func: str
    site: Site
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    inplace: bool = False
    grad_enabled: bool = True
    target: str | None = None  # the variable the result was stored in
    scope: str = "<cell>"  # function whose code made the call
    error: str | None = None  # "Type: message" when the call raised
    args: tuple[str, ...] = ()  # reprs of plain scalar arguments (True in requires_grad_(True))
    module: str | None = None  # qualified name of the nn.Module whose forward made the call
    nonfinite: NonFinite | None = None  # set only when a floating output held nan or inf
    scaler: bool = False  # called by a torch.amp.GradScaler (scaling a loss or unscaling gradients)
    # a GradScaler's update: (found inf: 1.0 when it skipped this step's optimizer step, the new scale)
    scaler_update: tuple[float | None, float | None] | None = None
    by_torch: bool = False  # torch's own Python code made the call (gradcheck, an optimizer), not the user's


@dataclass(frozen=True, slots=True)
class Stats:
    """What a tensor held, counted when an op made a non-finite value (the rare path: see capture.reads)."""

    numel: int
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    negatives: int = 0
    low: float | None = None  # the smallest and largest finite values
    high: float | None = None
    outside_unit: int = 0  # elements with |x| > 1 (acos/asin)

    @property
    def finite(self) -> bool:
        return self.nan == self.posinf == self.neginf == 0


@dataclass(frozen=True, slots=True)
class NonFinite:
    """An op whose floating output held nan or ±inf, and what its inputs held at that moment.

    ``inputs`` is aligned with `OpEvent.inputs` (None: not read, e.g. the target of an in-place op,
    already overwritten). ``written``: why the value is not the op's own doing: "value" (a nan/inf the
    code passed in, or data from outside autograd: ``torch.tensor(float('inf'))``, ``masked_fill(m, -inf)``),
    "scaler" (a GradScaler's scaled loss), "read" (an attribute read such as ``.grad``); "" when computed.
    """

    output: Stats
    inputs: tuple[Stats | None, ...] = ()
    written: str = ""
    dtype_max: float = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class SavedMemory:
    """One storage a node saved for backward: views of one storage share ``key`` (not an address)."""

    key: int
    nbytes: int  # the whole storage: what stays allocated while the graph holds it
    view_bytes: int  # what the saved tensor spans of it (a slice of a big storage keeps all of it)
    owner: int | None = None  # tid of the parameter, leaf or variable that keeps it anyway; None: only the graph


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One autograd node; ``tid`` is the tensor it produced or accumulates into."""

    nid: int
    label: str
    tid: int | None = None
    site: Site | None = None
    shape: tuple[int, ...] = ()
    saved: tuple[str, ...] = ()  # "self: (3, 2)" style descriptions
    dtype: str = ""
    value: TensorValue | None = None  # what the op produced (a leaf: its value), read when it ran
    memory: tuple[SavedMemory, ...] = ()  # the storages behind ``saved``


@dataclass(frozen=True, slots=True)
class GraphSnapshot:
    """The graph reachable from one root, taken before backward frees it."""

    root: int | None  # tid of the root tensor
    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[int, int], ...]  # (input node, consumer node)
    truncated: int = 0  # nodes left out by the size cap
    unread: int = 0  # nodes past the read cap: what they saved is not known
    in_use: int | None = None  # bytes the process held on the saved tensors' device, read for big graphs


@dataclass(frozen=True, slots=True)
class GradEvent:
    """How one backward changed a leaf's ``.grad``."""

    tid: int
    had_grad: bool  # .grad was already set (and not all zeros) before
    repeated_site: bool  # the last gradient came from this same call site


@dataclass(frozen=True, slots=True)
class BackwardEvent:
    """A call to ``backward`` or ``torch.autograd.grad``."""

    seq: int
    func: str
    site: Site
    root: TensorInfo | None
    graph: GraphSnapshot | None = None
    retain_graph: bool = False
    create_graph: bool = False
    leaf_grads: tuple[GradEvent, ...] = ()
    error: str | None = None
    calls: int = 1  # calls at this site folded into this event
    stale_saved: tuple[tuple[int, str, int], ...] = ()  # (node id, saved name, tid) changed behind autograd
    torchviz: str | None = None  # torchviz's DOT source of the graph, when asked for (--torchviz)
    steps: tuple[ReplayStep, ...] = ()  # the nodes the engine ran, in order (see capture.replay)
    steps_dropped: int = 0  # steps past the cap: counted, not recorded


@dataclass(frozen=True, slots=True)
class Binding:
    """A user name bound to an object at some point of the cell."""

    name: str
    tid: int
    seq: int  # the event count when the binding was seen
    line: int | None = None
    qualified: bool = False  # a module parameter/buffer name like "model.0.weight"


@dataclass(frozen=True, slots=True)
class GradValue:
    """A gradient, made plain: small ones in full, big ones as a summary."""

    shape: tuple[int, ...]
    values: object  # nested lists, or None when too big
    norm: float
    before: object = None  # values before the last backward accumulated into it
    source: str = "leaf"  # "leaf" (.grad) or "hook" (an intermediate's gradient)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The exception that ended the cell."""

    type: str
    message: str
    site: Site
    unwatched: bool = False  # raised after recording stopped: in a loop run unwatched past its recorded steps


@dataclass(frozen=True, slots=True)
class TrainingStep:
    """One backward of a loop: the loss (a scalar root) and each tracked parameter's gradient norm after it."""

    step: int  # 1 for the cell's first backward
    loss: float | None
    grad_norms: tuple[float | None, ...]  # aligned with TrainingTrace.parameters; None: .grad is None
    # ||w' - w|| / ||w||: w at this backward, w' at the next one (the optimizer's step in between);
    # aligned with parameters; () when the next backward was not read or nothing changed; None: not copied
    update_ratios: tuple[float | None, ...] = ()


@dataclass(frozen=True, slots=True)
class TrainingTrace:
    """Gradient flow across the backward calls of one cell (recorded when a cell calls backward repeatedly)."""

    parameters: tuple[str, ...]  # qualified names, in the order the model lists them
    reached: tuple[bool, ...]  # the first recorded backward's graph reached this parameter
    got_grad: tuple[bool, ...]  # its .grad was set after at least one step
    steps: tuple[TrainingStep, ...]
    line: int | None = None  # the first backward call
    untracked: int = 0  # named parameters past the cap (MAX_TRACKED)
    unread: int = 0  # backward calls run while a profiler recorded: nothing was read
    optimizer: bool = False  # the namespace held a torch.optim optimizer: the loop means to train
    stride: int = 1  # every stride-th step was kept (long loops: see capture.training.MAX_STEPS)
    calls: int = 0  # backward calls the cell made
    no_ratio: int = 0  # followed parameters too big to copy, so without an update/weight ratio
    unwatched_from: int | None = None  # steps from this one on were read at their optimizer step, unwatched


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything capture learned about one cell run."""

    source: str = ""  # the cell body as typed
    first_line: int = 2  # editor line of the source's line 1 (only to map back: lines are the source's)
    ops: tuple[OpEvent, ...] = ()
    backwards: tuple[BackwardEvent, ...] = ()
    bindings: tuple[Binding, ...] = ()
    final: dict[str, TensorInfo] = field(default_factory=dict)  # name -> info at the end
    gradients: dict[str, GradValue] = field(default_factory=dict)
    folded_ops: int = 0  # ops counted but not recorded (repeats past the cap)
    total_ops: int = 0
    unwatched_steps: int = 0  # torch optimizer steps run without our mode: their calls are not in total_ops
    loop_left_after: int | None = None  # a loop ran unwatched after this many optimizer steps (recorded whole)
    loop_unwatched: int = 0  # optimizer steps of that loop run unwatched: their iterations' calls not counted
    graphs: tuple[GraphSnapshot, ...] = ()  # named results with a grad_fn that no backward covered
    error: ErrorInfo | None = None
    previous: dict[str, TensorInfo] = field(default_factory=dict)  # name -> info before the cell
    provenance: dict[int, tuple[OpEvent, ...]] = field(default_factory=dict)  # tid -> chain made in earlier cells
    torchviz: str | None = None  # torchviz's DOT source for the first graph (--torchviz), or a one-line reason
    training: TrainingTrace | None = None  # per-step loss and gradient norms when backward ran more than once
    modules: dict[str, str] = field(default_factory=dict)  # qualified module name -> class, for the namespace's modules
    gradchecks: tuple[GradcheckEvent, ...] | None = None  # --gradcheck's findings; None: the option was off
    scales: tuple[float, ...] = ()  # the scale each torch.amp.GradScaler in the namespace settled on


@dataclass(frozen=True, slots=True)
class GradcheckMismatch:
    """One input whose analytical gradient (the Function's backward) differs from finite differences.

    Both are vector-Jacobian products with the same ``grad_output``: a random one finds the mismatch, and
    ones (``unit``) give the numbers when they show it too (a forgotten grad_output shows only with the
    random one); ``index`` is the element
    where they differ most, ``expected``/``got`` list the first few elements of each.
    """

    position: int  # the argument's position in ``apply(...)``
    name: str  # the forward's parameter name for it ("x"), or "input 0"
    index: tuple[int, ...]
    expected: tuple[float, ...]  # finite differences
    got: tuple[float, ...]  # the Function's backward
    worst_expected: float
    worst_got: float
    elements: int = 0  # the input's size (``expected`` lists at most a few)
    unit: bool = False  # compared with a grad_output of ones (plain derivatives), else a random one
    flat: bool = False  # the forward is flat here (finite differences 0 everywhere): a surrogate gradient?


@dataclass(frozen=True, slots=True)
class GradcheckEvent:
    """What --gradcheck found for one custom ``autograd.Function`` class at one call site.

    ``status``: "ok" (backward matches finite differences), "mismatch", or "skipped" with a ``reason``
    (inputs too big, not floating, forward or backward raised on the float64 copies, ...).
    """

    function: str  # the class's qualified name
    site: Site  # the cell line that called ``apply``
    status: str
    reason: str = ""
    mismatches: tuple[GradcheckMismatch, ...] = ()
    checked: tuple[str, ...] = ()  # the inputs compared


@dataclass(frozen=True, slots=True)
class TensorValue:
    """A tensor's value (or a gradient) made plain: a few values listed, else a summary."""

    shape: tuple[int, ...]
    values: object = None  # nested lists, for a tensor of at most a handful of elements
    norm: float | None = None
    low: float | None = None  # min and max, for a tensor too big to list
    high: float | None = None


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One node autograd's engine ran in a backward call, in the order it ran.

    ``arrived`` holds the gradients that reached the node (one per output of its op);
    ``sent`` holds, per input edge, the node the gradient went to and the gradient.
    For an ``AccumulateGrad`` node, ``before``/``after`` are the leaf's ``.grad``.
    """

    nid: int
    label: str
    arrived: tuple[TensorValue | None, ...] = ()
    sent: tuple[tuple[int, TensorValue | None], ...] = ()
    before: TensorValue | None = None
    after: TensorValue | None = None
