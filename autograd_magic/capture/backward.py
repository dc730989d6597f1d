"""Record backward calls: the graph before it is freed, and the gradients it made.

Hooks on autograd nodes live only for the duration of one backward call, so
nothing is left registered on the user's graph afterwards.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Hashable
from collections.abc import Set as AbstractSet
from dataclasses import replace
from types import FrameType
from typing import Any, Protocol

import torch

from .. import internal
from ..trace.events import BackwardEvent, Binding, GradEvent, GradValue, GraphSnapshot, Site, TensorInfo
from ..trace.names import base_name
from .compat import node_key, queue_engine_callback
from .reads import grad_fn_of, grad_of, norm_of, quiet, small_values
from .replay import Replay
from .session import GradHistory
from .snapshot import GraphWalker, Walk
from .tensors import Identity, describe_tensor, grad_value
from .training import TrainingRecorder


class Recorder(Protocol):
    """What backward recording needs from the recorder that owns it (see recorder.Recorder)."""

    ids: Identity
    namespace: dict[str, Any]
    max_repeats: int
    torchviz: bool

    def count_site(self, func: Any, depth: int, caller: FrameType | None = None) -> tuple[Site, int]: ...

    def add_backward_op(self, func: Any, site: Site, root: TensorInfo | None) -> int: ...

    def bindings(self) -> list[Binding]: ...

    def named_tids(self) -> set[int]: ...

    def note_held(self, depth: int, caller: FrameType | None = None) -> bool: ...

MAX_BACKWARD_DETAIL = 3  # backward calls per call site that get a graph and hooks
MAX_CUT_GRAPHS = 4  # graphs snapshotted where a value was cut out of them (detach, numpy, ...)
BACKWARD_FUNCS = frozenset({torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad})


class BackwardRecorder:
    """The part of `Recorder` that handles ``backward`` and ``autograd.grad``."""

    def __init__(self, recorder: Recorder, history: GradHistory) -> None:
        self._rec = recorder
        self._history = history
        self._events: list[BackwardEvent] = []
        self._calls: dict[tuple[int | None, str, str], int] = {}
        self.walker = GraphWalker(recorder.ids, recorder.namespace)
        self._hook_grads: dict[int, GradValue] = {}  # summarised in the hook: no gradient is kept
        self.torchviz_source: str | None = None
        self._cut_graphs: list[GraphSnapshot] = []
        self._before_grads: dict[int, Any] = {}
        self._roots: dict[Hashable, weakref.ref[torch.Tensor]] = {}  # node_key(grad_fn) -> a root backward ran from
        self._roots_limit = 64  # a loop keeping every loss (losses.append(loss)) keeps them all alive
        self._last_root: weakref.ref[torch.Tensor] | None = None
        self._last_key: tuple[int | None, str, str] | None = None  # the site of the last backward call seen
        # the loss of the last step of a loop run unwatched (see count_unwatched), not yet among _roots
        self._unwatched_root: weakref.ref[torch.Tensor] | None = None
        self._noticed: _Noticed | None = None  # a backward the mode did not see, until it finishes
        self.training = TrainingRecorder(recorder.ids)  # every backward call: loss and gradient norms

    def snapshot_cut(self, tensor: torch.Tensor) -> None:
        """The graph a value is being cut from, taken now: it may be gone by the end of the cell.

        Not when backward already ran from this tensor (``loss.item()`` to log a loss): that graph
        is a backward's, shown as one; a loop past the detail cap has no snapshot to compare with.
        """
        if len(self._cut_graphs) < MAX_CUT_GRAPHS and not self.was_root(tensor):
            self._cut_graphs.append(self.walker.take([tensor], Walk()))

    def was_root(self, tensor: torch.Tensor) -> bool:
        """Backward (or autograd.grad) ran from this very tensor in this cell."""
        self._note_unwatched_root()
        node = grad_fn_of(tensor)
        ref = self._roots.get(node_key(node)) if node is not None else None
        return ref is not None and ref() is tensor

    def _note_unwatched_root(self) -> None:
        pending = self._unwatched_root() if self._unwatched_root is not None else None
        self._unwatched_root = None
        if pending is not None:
            with quiet():  # the user's modes must not see our read of its grad_fn
                self._note_roots([pending])

    def _note_roots(self, roots: list[torch.Tensor]) -> None:
        # every call, past the detail cap too: a weak reference per root (kept with its node's key,
        # which is unique while the tensor, holding its node, lives); dead ones are dropped as we go
        if roots:
            self._last_root = weakref.ref(roots[0])
        for root in roots:
            node = grad_fn_of(root)
            if node is not None:
                self._roots[node_key(node)] = weakref.ref(root)
        if len(self._roots) > self._roots_limit:  # dead ones go; the limit doubles when most are alive
            self._roots = {key: ref for key, ref in self._roots.items() if ref() is not None}
            self._roots_limit = max(64, 2 * len(self._roots))

    def count_unwatched(self, loss: torch.Tensor | None) -> None:
        """An optimizer step of a loop run unwatched: its backward is taken to be the loop's last one seen
        (one backward per step; a loop that accumulates gradients over several is undercounted), run from
        ``loss`` (what the loss's name holds now), so the cell's end does not draw it as a result that
        never had a backward."""
        if self._last_key is not None:
            self._calls[self._last_key] += 1
        if loss is not None:  # noted when asked (`was_root`): only the last one can still be alive then
            self._unwatched_root = self._last_root = weakref.ref(loss)

    def last_root(self) -> torch.Tensor | None:
        """The tensor the last backward call ran from, while it lives."""
        return self._last_root() if self._last_root is not None else None

    def cut_graphs(self) -> tuple[GraphSnapshot, ...]:
        return tuple(self._cut_graphs)

    # -- one backward call -------------------------------------------------------
    def run(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            located: Callable[..., Any]) -> Any:
        """Call the user's backward exactly once (through ``located``, which looks like the user's line)."""
        __tracebackhide__ = True  # noqa: F841
        roots = _roots(func, args, kwargs)
        call = self._before(func, roots)
        loss = self.training.before(func, roots)
        error: BaseException | None = None
        try:
            return located(func, args, kwargs)
        except BaseException as caught:
            error = caught
            raise
        finally:
            if call is not None:
                self._after(func, kwargs, call, args, error)
            self.training.after(func, loss, error)

    def notice(self, frame: FrameType) -> None:
        """A ``torch.autograd.backward`` call that torch-function handling did not bring us (older torch),
        seen from the calls its helpers make before the engine starts (``frame`` is its frame): recorded
        as a call through the mode would be, and finished when the engine has run (or at the cell's end,
        when it raised)."""
        if self._noticed is not None and self._noticed.frame is frame:
            return
        self.finish_noticed(None)  # an earlier one that raised before its engine finished
        func = torch.autograd.backward
        scope = frame.f_locals
        roots = _roots(func, (scope.get("tensors"),), {})
        kwargs = {"retain_graph": scope.get("retain_graph"), "create_graph": scope.get("create_graph")}
        call = self._before(func, roots, frame.f_back)
        noticed = self._noticed = _Noticed(frame, call, kwargs, self.training.before(func, roots))
        try:
            for node in {id(n): n for n in map(grad_fn_of, roots) if n is not None}.values():
                noticed.handles.append(node.register_prehook(self._queue_finish))
        except Exception:
            internal.report_failure("hooking an unseen backward")

    def _queue_finish(self, grad_outputs: Any) -> None:
        """A prehook on a root: the engine runs, so it can call us back once it is done."""
        noticed = self._noticed
        if noticed is not None and not noticed.queued:
            noticed.queued = queue_engine_callback(lambda: self.finish_noticed(None))

    def finish_noticed(self, error: BaseException | None) -> None:
        """Finish the noticed backward call (the engine is done, or the cell ends with ``error``)."""
        noticed, self._noticed = self._noticed, None
        if noticed is None:
            return
        for handle in noticed.handles:
            handle.remove()
        func = torch.autograd.backward
        if noticed.call is not None:
            self._after(func, noticed.kwargs, noticed.call, (), error)
        self.training.after(func, noticed.loss, error)

    def _before(self, func: Callable[..., Any], roots: list[torch.Tensor],
                caller: FrameType | None = None) -> _Call | None:
        try:
            with quiet():
                site, count = self._rec.count_site(func, 3, caller)
                key = self._last_key = (site.line, site.code, func.__name__)
                self._calls[key] = self._calls.get(key, 0) + 1
                self._note_roots(roots)
                if count > max(MAX_BACKWARD_DETAIL, self._rec.max_repeats):
                    return _Call(site)  # past the detail cap: recorded only if it fails
                root = describe_tensor(roots[0], self._rec.ids) if roots else None
                seq = self._rec.add_backward_op(func, site, root)
                if count <= MAX_BACKWARD_DETAIL and self._rec.note_held(3, caller):
                    self.training.note_optimizer()
                prepared = self._prepare(roots, site) if count <= MAX_BACKWARD_DETAIL else None
                return _Call(site, seq, root, prepared)
        except Exception:
            internal.report_failure("preparing backward")
            return None

    def _after(self, func: Any, kwargs: dict[str, Any], call: _Call, args: tuple[Any, ...],
               error: BaseException | None) -> None:
        if call.seq is None and call.prepared is None and error is None:
            return  # a call past the detail cap that went well: nothing to record (a training loop's every step)
        try:
            with quiet():
                if call.seq is None and error is not None:  # a folded call that failed: worth a row
                    roots = _roots(func, args, kwargs)
                    call.root = describe_tensor(roots[0], self._rec.ids) if roots else None
                    call.seq = self._rec.add_backward_op(func, call.site, call.root)
                if call.seq is not None:
                    self._finish_call(func, kwargs, call, error)
        except Exception:
            internal.report_failure("recording backward")
        finally:
            if call.prepared is not None:
                call.prepared.remove_hooks()

    def _finish_call(self, func: Any, kwargs: dict[str, Any], call: _Call, error: BaseException | None) -> None:
        prepared, site = call.prepared, call.site
        if prepared is not None and error is None and func is not torch.autograd.grad:
            for leaf in prepared.walk.leaves:
                self._history.wrote(leaf, site)
            self.training.track(prepared.walk.leaves, self._rec.bindings(), self._rec.namespace, site.line)
            self._before_grads.update(prepared.before)
        if prepared is None and error is None:
            return
        assert call.seq is not None
        self._events.append(BackwardEvent(
            seq=call.seq,
            func=func.__name__,
            site=site,
            root=call.root,
            graph=None if prepared is None else prepared.graph,
            retain_graph=bool(kwargs.get("retain_graph") or kwargs.get("create_graph")),
            create_graph=bool(kwargs.get("create_graph")),
            leaf_grads=() if prepared is None else prepared.leaf_grads,
            stale_saved=() if prepared is None else tuple(prepared.walk.stale),
            torchviz=None if prepared is None else prepared.torchviz,
            steps=() if prepared is None or prepared.replay is None else tuple(prepared.replay.steps),
            steps_dropped=0 if prepared is None or prepared.replay is None else prepared.replay.dropped,
            error=None if error is None else f"{type(error).__name__}: {error}",
        ))

    def _prepare(self, roots: list[torch.Tensor], site: Site) -> _Prepared:
        prepared = _Prepared()
        prepared.graph = self.walker.take(roots, prepared.walk)
        prepared.leaf_grads = tuple(self._leaf_state(leaf, site, prepared) for leaf in prepared.walk.leaves)
        self._hook_named(prepared)
        prepared.replay = Replay(self._rec.ids)
        prepared.replay.attach(roots)
        if self._rec.torchviz and self.torchviz_source is None:
            prepared.torchviz = self.torchviz_source = self.torchviz_of(roots)
        return prepared

    def torchviz_of(self, roots: list[torch.Tensor]) -> str:
        """torchviz's own drawing, made now: after backward it cannot read the saved tensors."""
        try:
            from torchviz import make_dot
        except ImportError:
            return "# torchviz is not installed: pip install torchviz"
        live = self._rec.ids.live()
        params = {}
        for binding in self._rec.bindings():
            tensor = live.get(binding.tid)
            if isinstance(tensor, torch.Tensor) and tensor.is_leaf and tensor.requires_grad:
                params[binding.name] = tensor
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torchviz 0.0.3 uses distutils' LooseVersion
                return str(make_dot(roots[0], params=params, show_attrs=True, show_saved=True).source)
        except Exception as error:  # torchviz's own limits (e.g. recursion on very deep graphs)
            return f"# torchviz could not draw this graph: {type(error).__name__}: {error}"

    def _leaf_state(self, leaf: torch.Tensor, site: Site, prepared: _Prepared) -> GradEvent:
        grad = grad_of(leaf)  # an AccumulateGrad's tensor may since have been moved into the graph
        norm = None if grad is None else norm_of(grad)  # a reduction: no copy of a big gradient
        had = grad is not None and norm != 0
        tid = self._rec.ids.tid(leaf)
        if had and grad is not None:
            prepared.before[tid] = small_values(grad)  # kept only if this backward succeeds
        last = self._history.last_site(leaf)
        return GradEvent(tid, had, had and last == (site.line, site.code))

    def _hook_named(self, prepared: _Prepared) -> None:
        named = self._rec.named_tids()
        in_graph = prepared.walk.node_ids
        for tid, obj in self._rec.ids.live().items():
            grad_fn = grad_fn_of(obj) if tid in named and isinstance(obj, torch.Tensor) else None
            if grad_fn is None or node_key(grad_fn) not in in_graph:
                continue
            prepared.handles.append(grad_fn.register_prehook(self._grad_catcher(tid, obj.output_nr)))

    def _grad_catcher(self, tid: int, output_nr: int) -> Callable[[tuple[Any, ...]], None]:
        def catch(grad_outputs: tuple[Any, ...]) -> None:
            try:
                grad = grad_outputs[output_nr]
                if isinstance(grad, torch.Tensor):
                    with quiet():
                        self._hook_grads[tid] = grad_value(grad, source="hook")
            except Exception:
                internal.report_failure("catching a gradient")
        return catch

    # -- results -----------------------------------------------------------------
    def events(self) -> tuple[BackwardEvent, ...]:
        out = []
        for event in self._events:
            calls = self._calls.get((event.site.line, event.site.code, event.func), 1)
            out.append(event if calls == event.calls else _with_calls(event, calls))
        return tuple(out)

    def gradients(self, final: dict[str, TensorInfo], namespace: dict[str, Any]) -> dict[str, GradValue]:
        live = self._rec.ids.live()
        grads: dict[str, GradValue] = {}
        for name, info in final.items():
            tensor = live.get(info.tid)
            grad = grad_of(tensor) if isinstance(tensor, torch.Tensor) else None
            if grad is not None:
                grads[name] = grad_value(grad, self._before_grads.get(info.tid))
            elif info.tid in self._hook_grads:
                grads[name] = self._hook_grads[info.tid]
        return grads

    def result_graphs(self, final: dict[str, TensorInfo], used: AbstractSet[str],
                      limit: int = 12) -> tuple[GraphSnapshot, ...]:
        """Graphs of named results that have a grad_fn: taken at the end of the cell."""
        live = self._rec.ids.live()
        out = []
        covered = {n.nid for e in self._events if e.graph for n in e.graph.nodes}
        for name, info in final.items():
            if info.grad_fn is None or base_name(name) not in used or info.node in covered:
                continue  # a backward's snapshot already holds this graph
            tensor = live.get(info.tid)
            if isinstance(tensor, torch.Tensor) and grad_fn_of(tensor) is not None and not self.was_root(tensor):
                out.append(self.walker.take([tensor], Walk()))
                if len(out) >= limit:
                    break
        return tuple(out)

    def close(self) -> None:
        self._hook_grads.clear()
        self._before_grads.clear()
        self._roots.clear()
        self._last_root = self._unwatched_root = None
        self.walker.apply_sites.clear()
        self.training.close()


class _Noticed:
    """A backward call torch-function handling did not bring us, between its start and the engine's end."""

    def __init__(self, frame: FrameType, call: _Call | None, kwargs: dict[str, Any], loss: float | None) -> None:
        self.frame = frame  # held only until it finishes: it holds the user's roots
        self.call = call
        self.kwargs = kwargs
        self.loss = loss
        self.handles: list[Any] = []
        self.queued = False


class _Call:
    """One backward call as recorded around it: where, its timeline row, and what was prepared."""

    def __init__(self, site: Site, seq: int | None = None, root: TensorInfo | None = None,
                 prepared: _Prepared | None = None) -> None:
        self.site = site
        self.seq = seq
        self.root = root
        self.prepared = prepared


class _Prepared:
    """What one detailed backward collected before running."""

    def __init__(self) -> None:
        self.walk = Walk()
        self.graph: GraphSnapshot | None = None
        self.leaf_grads: tuple[GradEvent, ...] = ()
        self.handles: list[Any] = []
        self.before: dict[int, Any] = {}
        self.torchviz: str | None = None
        self.replay: Replay | None = None

    def remove_hooks(self) -> None:
        if self.replay is not None:
            self.replay.detach_hooks()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.walk.leaves.clear()


def _roots(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    first = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
    items = first if isinstance(first, (list, tuple)) else (first,)
    return [t for t in items if isinstance(t, torch.Tensor)]


def _with_calls(event: BackwardEvent, calls: int) -> BackwardEvent:
    return replace(event, calls=calls)
