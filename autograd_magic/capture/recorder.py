"""Record what a block of code does with tensors.

`Recorder` is the public context manager: it owns the state and, on exit, the
`Trace`. `mode.RecordingMode` is a tiny `TorchFunctionMode` that calls the user's
function first and only then records, inside a guard, so a failure of ours
can never change the user's result. Nothing here holds a strong reference to a
user tensor after the block ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import CodeType, FrameType
from typing import Any

import torch

from .. import internal
from ..trace.events import Binding, ErrorInfo, GradcheckEvent, OpEvent, Site, TensorInfo, Trace
from ..trace.names import identifiers
from .backward import BackwardRecorder
from .compat import function_of_forward
from .finite import SCALER_FILE, non_finite, scaler_scales, scaler_update
from .frames import user_local, user_locals
from .gradcheck import FunctionCalls
from .mode import RecordingMode, leave_mode
from .modules import ModuleNames
from .namespace import scan_namespace
from .optimizers import StepOut
from .reads import grad_fn_of, profiling, quiet
from .session import Session, remembered
from .sites import SiteTable
from .tensors import Identity, describe

DEFAULT_MAX_REPEATS = 8  # calls recorded in detail per call site; later ones are only counted
_INPLACE_DUNDERS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                              "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__",
                              "__imatmul__"})
_PROFILER_OPS = "torch._ops.profiler"  # the module of torch.ops.profiler's ops, as torch-function handling sees them
_CUTS = frozenset({"detach", "numpy", "item", "tolist", "data.__get__"})


def func_name(func: Callable[..., Any]) -> str:
    """'mul', 'grad.__get__', 'requires_grad.__set__', '__setitem__' ..."""
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", None) or repr(func)
    if name in ("__get__", "__set__") and owner is not None and hasattr(owner, "__name__"):
        return f"{owner.__name__}.{name}"
    return name


def is_inplace(name: str, kwargs: dict[str, Any] | None) -> bool:
    if name in _INPLACE_DUNDERS:
        return True
    if kwargs and (kwargs.get("out") is not None or kwargs.get("inplace") is True):
        return True  # out=... writes its argument; F.relu(x, inplace=True) writes x
    return name.endswith("_") and not name.endswith("__")


class Recorder:
    """Context manager that records the torch calls made inside it.

    >>> with Recorder(source=src, filename=fname, namespace=ns) as rec:
    ...     exec(code, ns)
    >>> rec.trace.ops[0].func
    'mul'

    ``filename`` names the code whose lines are reported (a notebook cell);
    without it the first frame outside torch is taken as user code. Lines are
    the code's own (see trace/lines.py); ``first_line`` is the editor line of
    the source's line 1, kept in the report so an editor can map back.
    ``gradcheck=True`` also checks each custom ``autograd.Function``'s backward
    against finite differences on exit (see gradcheck.py: it calls the forward again).
    ``leave_loops=True`` runs a training loop unwatched past its recorded steps (optimizers.StepOut), for a
    caller that calls `between_statements` after each top-level statement.
    """

    def __init__(
        self,
        *,
        source: str = "",
        filename: str | None = None,
        namespace: dict[str, Any] | None = None,
        first_line: int = 2,
        max_repeats: int = DEFAULT_MAX_REPEATS,
        session: Session | None = None,
        cell: int | None = None,
        torchviz: bool = False,
        gradcheck: bool = False,
        leave_loops: bool = False,
    ) -> None:
        self.sites = SiteTable(source, filename)
        self.ids = Identity()
        self.namespace = namespace if namespace is not None else {}
        self.max_repeats = max_repeats
        self.trace: Trace | None = None
        self._source = source
        self._first_line = first_line
        self._ops: list[OpEvent] = []
        self._bindings: list[Binding] = []
        # calls per (id(code), instruction, func): by id, since hashing a code object costs its whole length
        self.counts: dict[tuple[Any, ...], int] = {}
        self._failed_calls = 0
        self.session = session if session is not None else Session()
        self.cell = cell
        self.torchviz = torchviz  # also draw the first backward's graph with torchviz (costly)
        self.backward = BackwardRecorder(self, self.session.grads)
        self._provenance: dict[int, tuple[OpEvent, ...]] = {}
        self._mode: RecordingMode | None = None
        self._step_out: StepOut | None = None
        self._unwatched_steps = 0
        # leave a training loop after its recorded steps: only for a caller that runs the code statement by
        # statement and calls `between_statements` after each (nothing else would put our mode back)
        self._leave_loops = leave_loops
        self._loss_name: str | None = None  # the name the last recorded backward's root was bound to
        self._loss_local = False  # ... in a user function's locals (a script's main()), not the namespace
        self._left_after: int | None = None  # the loop was left after this many optimizer steps
        self._loop_unwatched = 0  # steps of a loop left: not one of their calls seen
        self._error_unwatched = False
        self._previous: dict[str, TensorInfo] = {}
        self._held: set[tuple[str, int]] = set()  # (qualified name, tid) bound from a user function's locals
        self.modules = ModuleNames(self.namespace, self.sites.is_user_code)
        # --gradcheck: the custom Functions called, checked after the cell (None: off, nothing is looked at)
        self.functions = FunctionCalls(self.sites) if gradcheck else None
        self._gradchecks: tuple[GradcheckEvent, ...] | None = None

    # -- entering and leaving -------------------------------------------------
    def __enter__(self) -> Recorder:
        try:
            with quiet():
                self._previous = self._scan(seq=0)
                self._provenance = self._earlier_chains()
                self.backward.walker.recall_values([t for _, t in remembered(self.namespace)], self.session.values)
                self.backward.walker.note_start()
            self.backward.walker.earlier_sites = {tid: chain[0].site for tid, chain in self._provenance.items()}
        except Exception:  # the cell runs whatever its namespace holds
            internal.report_failure("reading the namespace before the cell")
        self._mode = RecordingMode(self)
        self._mode.__enter__()
        self._step_out = StepOut(self._mode, self.max_repeats, loop=self._leave_loops,
                                 on_leave=self._leave_loop, on_unwatched=self._unwatched_step)
        self._step_out.start()
        return self

    def between_statements(self) -> None:
        """Called between the cell's top-level statements: a loop left in the last one is over."""
        if self._step_out is not None:
            self._step_out.resume()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        mode, self._mode = self._mode, None
        step_out, self._step_out = self._step_out, None
        suspended = False
        self.backward.finish_noticed(exc)
        try:
            if step_out is not None:
                self._unwatched_steps = step_out.stepped_out
                self._left_after, self._loop_unwatched = step_out.left_after, step_out.unwatched_loop_steps
                self._error_unwatched = exc is not None and step_out.out_of_loop
                suspended = step_out.close()  # True: a step that raised left our mode off the stack
        finally:
            if mode is not None:
                leave_mode(mode, self, on_stack=not suspended)
        try:
            with quiet():
                self.trace = self._finish(exc, tb)
        except Exception:
            internal.report_failure("building the trace")
            self.trace = Trace(source=self._source, first_line=self._first_line)
        try:
            # after the namespace was read: what a re-run forward changes cannot reach the report
            self._check_functions(exc)
            if self._gradchecks is not None:
                self.trace = replace(self.trace, gradchecks=self._gradchecks)
        finally:
            self.functions = None
            self.ids.clear()
            self.backward.close()
            self.modules.clear()

    # -- a loop left after its recorded steps (see optimizers.StepOut) -------------------------
    def _leave_loop(self) -> None:
        """The loop runs unwatched from here: remember which name holds its loss (the last recorded
        backward's root), to keep each later step's loss from it."""
        root = self.backward.last_root()
        if root is None or self._loss_name is not None:
            return
        self._loss_name = next((name for name, value in list(self.namespace.items())
                                if value is root and not name.startswith("_")), None)
        if self._loss_name is None:
            held = user_locals(self.sites.user_frame(1), self.sites.is_user_code, self.namespace)
            self._loss_name = next((name for name, value in held.items() if value is root), None)
            self._loss_local = self._loss_name is not None
            del held  # nothing of the frames' is kept

    def _unwatched_step(self) -> None:
        """Before an unwatched optimizer step: its backward ran, unseen; keep its loss and gradient norms."""
        loss = self._loss_now()
        self.backward.training.unwatched(loss if isinstance(loss, torch.Tensor) else None)
        self.backward.count_unwatched(loss if isinstance(loss, torch.Tensor) else None)

    def _loss_now(self) -> Any:
        if self._loss_name is None:
            return None
        if self._loss_local:
            return user_local(self.sites.user_frame(2), self.sites.is_user_code, self._loss_name)
        return self.namespace.get(self._loss_name)

    # -- the hot path (see mode.RecordingMode.__torch_function__) ------------------------
    def record(self, func: Any, args: tuple[Any, ...], kwargs: Any, result: Any,
               error: BaseException | None, caller: FrameType) -> None:
        """Record one call in detail; called for the first `max_repeats` calls per call site."""
        if error is None and getattr(func, "__module__", None) == _PROFILER_OPS:
            return  # record_function's marks (every optimizer step and zero_grad makes two): no tensor work
        if error is not None:
            self._failed_calls += 1
        if self.functions is not None:
            self._note_function(caller)
        try:
            frame = self.sites.user_frame_from(caller)
            if frame is not None:
                self._note_apply(frame)
            with quiet():
                direct = frame is caller
                self._record(func, args, kwargs, result, error, frame, direct=direct,
                             module=None if direct else self.modules.module_of(caller),
                             caller_file=caller.f_code.co_filename,
                             by_torch=not direct and self.sites.is_torch_code(caller.f_code))
        except Exception:
            internal.report_failure("recording an op")

    def _note_apply(self, frame: FrameType) -> None:
        """An op directly in a custom Function's forward: note the line that applied the Function, which
        names its node (``CubeBackward``) in the graph; that node is made by ``apply``, not by an op we see."""
        cls = function_of_forward(frame)
        if cls is not None:
            site = self.sites.site(self.sites.user_frame_from(frame.f_back))
            self.backward.walker.apply_sites.setdefault(cls, set()).add(site)

    def _note_function(self, caller: FrameType) -> None:
        try:
            assert self.functions is not None
            self.functions.note(caller)
        except Exception:
            internal.report_failure("noting a custom autograd.Function call")

    def _check_functions(self, exc: BaseException | None) -> None:
        """--gradcheck, after the cell: never after an interrupt, never into the cell's result."""
        if self.functions is None or (exc is not None and not isinstance(exc, Exception)):
            return
        try:
            busy = "a profiler was recording, and it would have seen the forward run again" if profiling() else ""
            self._gradchecks = self.functions.check(busy)
        except Exception:
            internal.report_failure("checking custom autograd.Functions")

    def _record(self, func: Any, args: tuple[Any, ...], kwargs: Any, result: Any,
                error: BaseException | None, frame: FrameType | None, direct: bool = True,
                module: str | None = None, caller_file: str = "", by_torch: bool = False) -> None:
        name = func_name(func)
        inputs = self._describe_all(args, kwargs)
        outputs = self._describe_all((result,), None) if error is None else ()
        target = self.sites.target(frame)
        site = self.sites.site(frame)
        inplace = is_inplace(name, kwargs)
        event = OpEvent(
            seq=len(self._ops) + 1,
            func=name,
            site=site,
            inputs=inputs,
            outputs=outputs,
            inplace=inplace,
            grad_enabled=torch.is_grad_enabled(),
            target=target if isinstance(target, str) else None,
            scope=_scope(frame),
            error=None if error is None else f"{type(error).__name__}: {error}",
            args=_scalar_args(args),
            module=module,
            nonfinite=non_finite(name, args, kwargs, result, inplace, caller_file) if outputs else None,
            scaler=caller_file.endswith(SCALER_FILE),
            scaler_update=scaler_update(name, args, result, caller_file) if error is None else None,
            by_torch=by_torch,
        )
        self._ops.append(event)
        if direct:  # ops inside `G = nn.Linear(2, 4)` or `loss = crit(out, y)` are temporaries, not `G`/`loss`
            self._bind_targets(target, outputs, event)
        made = outputs[0].node if outputs else (inputs[0].node if event.inplace and inputs else None)
        if error is None and made is not None:
            self.backward.walker.remember_values(made, args, result)
        if error is None and outputs and isinstance(result, torch.Tensor):
            self.backward.walker.note_value(inputs[0] if event.inplace and inputs else outputs[0], result)
        if error is None and name in _CUTS and inputs and inputs[0].grad_fn is not None:
            self.backward.snapshot_cut(args[0])
        changed = inputs[:1] if event.inplace else ()  # an in-place op gives its target a new grad_fn
        for out in (*outputs, *changed):
            if out.node is not None:
                self.backward.walker.note_output(out, site)

    def _bind_targets(self, target: str | tuple[str, ...] | None, outputs: tuple[TensorInfo, ...],
                      event: OpEvent) -> None:
        if target is None or not outputs or event.scope != "<cell>" and event.site.line is None:
            return
        names = (target,) if isinstance(target, str) else target
        if len(names) != len(outputs):
            return  # `parts = x.chunk(2)` binds a tuple, not a tensor
        for bound, info in zip(names, outputs, strict=True):
            label = bound if event.scope == "<cell>" else f"{bound} (in {event.scope})"
            self._bindings.append(Binding(label, info.tid, event.seq, event.site.line))

    def _describe_all(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[TensorInfo, ...]:
        found: list[TensorInfo] = []
        values: list[Any] = list(args)
        if kwargs:
            values.extend(kwargs.values())
        for value in values:  # one level of lists and tuples: pytree flattening costs too much here
            items = value if isinstance(value, (list, tuple)) else (value,)
            for item in items:
                info = describe(item, self.ids)
                if info is not None:
                    found.append(info)
        return tuple(found)

    # -- what the backward recorder needs from us ------------------------------
    def add_backward_op(self, func: Any, site: Site, root: TensorInfo | None) -> int:
        """Put a backward call on the op timeline; returns its sequence number."""
        seq = len(self._ops) + 1
        self._ops.append(OpEvent(seq=seq, func=func_name(func), site=site, inputs=(root,) if root else ()))
        return seq

    def count_site(self, func: Any, depth: int, caller: FrameType | None = None) -> tuple[Site, int]:
        """Count a backward call at its user line: ``depth`` frames up, or from ``caller`` when given."""
        frame = self.sites.user_frame(depth + 1) if caller is None else self.sites.user_frame_from(caller)
        key = (0, 0, func) if frame is None else (id(frame.f_code), frame.f_lasti, func)
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        return self.sites.site(frame), count

    def is_user_code(self, code: CodeType) -> bool:
        return self.sites.is_user_code(code)

    def note_held(self, depth: int, caller: FrameType | None = None) -> bool:
        """At a detailed backward call: bind the parameters of the modules the user's running functions hold
        in their locals (a script's ``main()``: ``model.0.weight``). True when they hold an optimizer."""
        frame = self.sites.user_frame(depth + 1) if caller is None else caller
        held = user_locals(frame, self.sites.is_user_code, self.namespace)
        modules = {name: value for name, value in held.items() if isinstance(value, torch.nn.Module)}
        optimizer = any(isinstance(value, torch.optim.Optimizer) for value in held.values())
        del held  # nothing of the frames' is kept
        seq = len(self._ops)
        for name, (info, qualified) in scan_namespace(modules, self.ids).items():
            if (name, info.tid) not in self._held:
                self._held.add((name, info.tid))
                self._bindings.append(Binding(name, info.tid, seq, None, qualified))
        return optimizer

    def bindings(self) -> list[Binding]:
        return list(self._bindings)

    def named_tids(self) -> set[int]:
        named = {b.tid for b in self._bindings}
        for value in list(self.namespace.values()):
            if isinstance(value, torch.Tensor):
                known = self.ids.known(value)
                if known is not None:
                    named.add(known)
        return named

    def total_calls(self) -> int:
        return sum(self.counts.values()) + self._failed_calls

    def absorb_counts(self, sites: dict[tuple[int, int], list[Any]]) -> None:
        """Fold the fast path's per-instruction counts into `counts` (keyed by instruction and func)."""
        keys_at: dict[tuple[Any, Any], list[tuple[Any, ...]]] = {}
        for key in self.counts:
            keys_at.setdefault((key[0], key[1]), []).append(key)
        for site, (_, calls, _) in sites.items():
            keys = keys_at.get(site, [])
            if len(keys) == 1:
                self.counts[keys[0]] = calls

    # -- finishing ---------------------------------------------------------------
    def _scan(self, seq: int) -> dict[str, TensorInfo]:
        found = scan_namespace(self.namespace, self.ids)
        self._bindings.extend(Binding(name, info.tid, seq, None, qualified)
                              for name, (info, qualified) in found.items())
        return {name: info for name, (info, _) in found.items()}

    def _finish(self, exc: BaseException | None, tb: Any) -> Trace:
        final = self._scan(seq=len(self._ops) + 1)
        self._remember_origins(final)
        used = identifiers(self._source)
        return Trace(
            graphs=self.backward.result_graphs(final, used) + self.backward.cut_graphs(),
            source=self._source,
            first_line=self._first_line,
            ops=tuple(self._ops),
            backwards=self.backward.events(),
            bindings=tuple(self._bindings),
            final=final,
            gradients=self.backward.gradients(final, self.namespace),
            folded_ops=max(0, self.total_calls() - len(self._ops)),
            total_ops=self.total_calls(),
            unwatched_steps=self._unwatched_steps,
            loop_left_after=self._left_after,
            loop_unwatched=self._loop_unwatched,
            error=self._error_info(exc, tb),
            previous=self._previous,
            provenance=self._provenance,
            torchviz=self.backward.torchviz_source or self._torchviz_of_results(final),
            training=self.backward.training.result(),
            modules=self.modules.classes(),
            gradchecks=self._gradchecks,
            scales=scaler_scales(self.namespace) if any(op.scaler for op in self._ops) else (),
        )

    def _earlier_chains(self) -> dict[int, tuple[OpEvent, ...]]:
        found = {}
        for _, tensor in remembered(self.namespace):
            tid = self.ids.tid(tensor)
            chain = self.session.origins.chain_for(tensor, tid)
            if chain:
                found[tid] = chain
        return found

    def _remember_origins(self, final: dict[str, TensorInfo]) -> None:
        live = self.ids.live()
        tensors = {i.tid: live[i.tid] for i in final.values() if isinstance(live.get(i.tid), torch.Tensor)}
        self.session.origins.remember(tensors, tuple(self._ops), self.cell)
        self.backward.walker.keep_values(tensors, self.session.values)

    def _torchviz_of_results(self, final: dict[str, TensorInfo]) -> str | None:
        """No backward ran: draw the first named result that has a graph."""
        if not self.torchviz:
            return None
        live = self.ids.live()
        for info in final.values():
            tensor = live.get(info.tid)
            if isinstance(tensor, torch.Tensor) and grad_fn_of(tensor) is not None:
                return self.backward.torchviz_of([tensor])
        return None

    def _error_info(self, exc: BaseException | None, tb: Any) -> ErrorInfo | None:
        if exc is None:
            return None
        line = None
        while tb is not None:  # the innermost frame that is cell code
            if self.sites.is_user_code(tb.tb_frame.f_code):
                line = tb.tb_lineno
            tb = tb.tb_next
        return ErrorInfo(type(exc).__name__, str(exc), Site(line, self.sites.line_text(line)),
                         unwatched=self._error_unwatched)


def _scope(frame: FrameType | None) -> str:
    if frame is None:
        return "<unknown>"
    name = frame.f_code.co_name
    return "<cell>" if name == "<module>" else name


def _scalar_args(args: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(repr(a) for a in args[1:4] if isinstance(a, (bool, int, float, type(None))))
