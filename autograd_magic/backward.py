"""Record backward calls: the graph before it is freed, and the gradients it made.

Hooks on autograd nodes live only for the duration of one backward call, so
nothing is left registered on the user's graph afterwards.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from . import internal
from .events import BackwardEvent, GradEvent, GradValue, GraphNode, GraphSnapshot, Site, TensorInfo
from .naming import base_name
from .session import GradHistory
from .tensors import Identity, describe_tensor, fingerprint, fingerprint_key, grad_value, plain_values

if TYPE_CHECKING:
    from .capture import Recorder

MAX_BACKWARD_DETAIL = 3  # backward calls per call site that get a graph and hooks
MAX_GRAPH_NODES = 5000  # capture cap; the views fold and cap further
MAX_INSPECTED = 500  # nodes per snapshot whose shape and saved tensors are read
MAX_CUT_GRAPHS = 4
VIEW_BASE = "view base"  # the label of a view's base tensor in a snapshot  # graphs snapshotted where a value was cut out of them (detach, numpy, ...)
_BACKWARD_FUNCS = frozenset({torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad})
_saved_names: dict[type, tuple[str, ...]] = {}


def is_backward(func: Callable[..., Any]) -> bool:
    return func in _BACKWARD_FUNCS


class BackwardRecorder:
    """The part of `Recorder` that handles ``backward`` and ``autograd.grad``."""

    def __init__(self, recorder: Recorder, history: GradHistory) -> None:
        self._rec = recorder
        self._history = history
        self._events: list[BackwardEvent] = []
        self._calls: dict[tuple[int | None, str, str], int] = {}
        self._node_tid: dict[int, int] = {}
        self._node_site: dict[int, Site] = {}
        self._hook_grads: dict[int, torch.Tensor] = {}
        self._values: dict[tuple[int, tuple[int, ...], int], tuple[int, int]] = {}  # key -> (fingerprint, tid)
        self.torchviz_source: str | None = None
        self._cut_graphs: list[GraphSnapshot] = []
        self._before: dict[int, Any] = {}

    def note_output(self, info: TensorInfo, site: Site) -> None:
        if info.node is not None and info.node not in self._node_site:
            self._node_tid[info.node] = info.tid
            self._node_site[info.node] = site

    def remember_values(self, args: tuple[Any, ...], result: Any, ids: Identity) -> None:
        """Fingerprint small tensors of a recorded op, to spot later writes autograd cannot see."""
        items = [*args, *(result if isinstance(result, (tuple, list)) else (result,))]
        for item in items:
            if isinstance(item, torch.Tensor):
                key = fingerprint_key(item)
                if key is None:
                    continue
                tid = ids.tid(item)
                known = self._values.get(key)
                if known is None or known[1] != tid:  # new, or freed memory reused by another tensor
                    value = fingerprint(item)
                    if value is not None:
                        self._values[key] = (value, tid)

    def snapshot_cut(self, tensor: torch.Tensor) -> None:
        """The graph a value is being cut from, taken now: it may be gone by the end of the cell."""
        if len(self._cut_graphs) < MAX_CUT_GRAPHS:
            self._cut_graphs.append(self._snapshot([tensor], _Prepared()))

    def cut_graphs(self) -> tuple[GraphSnapshot, ...]:
        return tuple(self._cut_graphs)

    # -- one backward call -------------------------------------------------------
    def run(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True  # noqa: F841
        prepared: _Prepared | None = None
        try:
            site, count = self._rec.count_site(func, 2)
            key = (site.line, site.code, func.__name__)
            self._calls[key] = self._calls.get(key, 0) + 1
            if count > max(MAX_BACKWARD_DETAIL, self._rec.max_repeats):
                return self._run_folded(func, args, kwargs, site)
            roots = _roots(func, args, kwargs)
            root = describe_tensor(roots[0], self._rec.ids) if roots else None
            seq = self._rec.add_backward_op(func, site, root)
            if count <= MAX_BACKWARD_DETAIL:
                prepared = self._prepare(roots, site)
        except Exception:
            internal.report_failure("preparing backward")
            return func(*args, **kwargs)
        error: BaseException | None = None
        try:
            return func(*args, **kwargs)
        except BaseException as caught:
            error = caught
            raise
        finally:
            self._after(func, kwargs, site, seq, root, prepared, error)

    def _run_folded(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], site: Site) -> Any:
        """A backward past the detail cap: only a failure is recorded."""
        __tracebackhide__ = True  # noqa: F841
        try:
            return func(*args, **kwargs)
        except BaseException as error:
            roots = _roots(func, args, kwargs)
            root = describe_tensor(roots[0], self._rec.ids) if roots else None
            self._after(func, kwargs, site, self._rec.add_backward_op(func, site, root), root, None, error)
            raise

    def _after(self, func: Any, kwargs: dict[str, Any], site: Site, seq: int, root: TensorInfo | None,
               prepared: _Prepared | None, error: BaseException | None) -> None:
        try:
            if prepared is not None and error is None and func is not torch.autograd.grad:
                for leaf in prepared.leaves:
                    self._history.wrote(leaf, site)
                self._before.update(prepared.before)
            if prepared is not None:
                prepared.remove_hooks()
            if prepared is None and error is None:
                return
            self._events.append(BackwardEvent(
                seq=seq,
                func=func.__name__,
                site=site,
                root=root,
                graph=None if prepared is None else prepared.graph,
                retain_graph=bool(kwargs.get("retain_graph") or kwargs.get("create_graph")),
                create_graph=bool(kwargs.get("create_graph")),
                leaf_grads=() if prepared is None else prepared.leaf_grads,
                stale_saved=() if prepared is None else tuple(prepared.stale),
                torchviz=None if prepared is None else prepared.torchviz,
                error=None if error is None else f"{type(error).__name__}: {error}",
            ))
        except Exception:
            internal.report_failure("recording backward")

    def _prepare(self, roots: list[torch.Tensor], site: Site) -> _Prepared:
        prepared = _Prepared()
        prepared.graph = self._snapshot(roots, prepared)
        prepared.leaf_grads = tuple(self._leaf_state(leaf, site, prepared) for leaf in prepared.leaves)
        self._hook_named(prepared)
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
        grad = leaf.grad
        had = grad is not None and bool(grad.detach().ne(0).any())
        tid = self._rec.ids.tid(leaf)
        before = None
        if had and grad is not None:
            before = plain_values(grad)
            prepared.before[tid] = before  # kept only if this backward succeeds
        last = self._history.last_site(leaf)
        return GradEvent(tid, had, had and last == (site.line, site.code),
                         None if grad is None else float(grad.detach().double().norm()))

    def _hook_named(self, prepared: _Prepared) -> None:
        named = self._rec.named_tids()
        in_graph = prepared.node_ids
        for tid, obj in self._rec.ids.live().items():
            if tid not in named or not isinstance(obj, torch.Tensor) or obj.grad_fn is None:
                continue
            if id(obj.grad_fn) not in in_graph:
                continue
            prepared.handles.append(obj.grad_fn.register_prehook(self._grad_catcher(tid, obj.output_nr)))

    def _grad_catcher(self, tid: int, output_nr: int) -> Callable[[tuple[Any, ...]], None]:
        def catch(grad_outputs: tuple[Any, ...]) -> None:
            try:
                grad = grad_outputs[output_nr]
                if isinstance(grad, torch.Tensor):
                    self._hook_grads[tid] = grad.detach()
            except Exception:
                internal.report_failure("catching a gradient")
        return catch

    # -- the graph -----------------------------------------------------------------
    def _snapshot(self, roots: list[torch.Tensor], prepared: _Prepared) -> GraphSnapshot:
        ids = self._rec.ids
        start = [r.grad_fn for r in roots if r.grad_fn is not None]
        root_tid = ids.tid(roots[0]) if roots else None
        prepared.named_nodes = self._named_grad_fns()
        queue: deque[Any] = deque(start)
        seen: dict[int, int] = {id(n): ids.node(n) for n in start}
        nodes: list[GraphNode] = []
        edges: list[tuple[int, int]] = []
        skipped = 0
        while queue:  # iterative: deep chains must not hit the recursion limit
            node = queue.popleft()
            nid = seen[id(node)]
            if len(nodes) >= MAX_GRAPH_NODES:
                skipped += 1
                continue
            nodes.append(self._graph_node(node, nid, prepared))
            for child, _ in node.next_functions:
                if child is None:
                    continue
                if id(child) not in seen:
                    seen[id(child)] = ids.node(child)
                    queue.append(child)
                edges.append((seen[id(child)], nid))
        prepared.node_ids = set(seen)
        self._add_view_bases(nodes, edges)
        kept = {n.nid for n in nodes}
        return GraphSnapshot(root_tid, tuple(nodes), tuple(e for e in edges if e[0] in kept and e[1] in kept), skipped)

    def _add_view_bases(self, nodes: list[GraphNode], edges: list[tuple[int, int]]) -> None:
        """torchviz's dotted 'view base' nodes: the tensor a named view looks into."""
        ids = self._rec.ids
        for node in nodes[:MAX_INSPECTED]:
            view = ids.get(node.tid) if node.tid is not None else None
            base = getattr(view, "_base", None) if isinstance(view, torch.Tensor) else None
            if not isinstance(base, torch.Tensor) or view.grad_fn is None or ids.known(view) != node.tid:
                continue
            base_nid = ids.node(base)
            if not any(n.nid == base_nid for n in nodes):
                nodes.append(GraphNode(base_nid, VIEW_BASE, ids.tid(base), None, tuple(base.shape),
                                       dtype=str(base.dtype).removeprefix("torch.")))
            edges.append((base_nid, node.nid))

    def _graph_node(self, node: Any, nid: int, prepared: _Prepared) -> GraphNode:
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):  # AccumulateGrad: the leaf itself
            prepared.leaves.append(variable)
            return GraphNode(nid, type(node).__name__, self._rec.ids.tid(variable), None, tuple(variable.shape),
                             dtype=str(variable.dtype).removeprefix("torch."))
        tid = self._node_tid.get(nid)
        if tid is not None and getattr(self._rec.ids.get(tid), "grad_fn", node) is not node:
            tid = None  # the tensor was since changed in place: this node is its earlier version
        tid = tid or prepared.named_nodes.get(id(node))
        prepared.inspected += 1
        if prepared.inspected > MAX_INSPECTED:  # deep graphs: the view draws the nodes near the root
            return GraphNode(nid, type(node).__name__, tid, self._node_site.get(nid))
        shape, dtype = _node_meta(node)
        return GraphNode(nid, type(node).__name__, tid, self._node_site.get(nid), shape,
                         self._saved(node, nid, prepared), dtype)

    def _saved(self, node: Any, nid: int, prepared: _Prepared) -> tuple[str, ...]:
        """Describe what a node saved for backward; note saved values changed behind autograd's back."""
        out = []
        for attr in _saved_names_of(node):
            try:
                value = getattr(node, attr)
            except RuntimeError as error:  # freed by an earlier backward, or modified in place
                out.append(f"{attr[7:]}: {'modified in place' if 'inplace' in str(error) else 'freed'}")
                continue
            if not isinstance(value, torch.Tensor):
                continue
            out.append(f"{attr[7:]}: {tuple(value.shape)}")
            key = fingerprint_key(value)
            known = self._values.get(key) if key is not None else None
            # only while the tensor we fingerprinted lives: otherwise its memory may hold another tensor now
            if known is not None and self._rec.ids.alive(known[1]) and fingerprint(value) != known[0]:
                prepared.stale.append((nid, attr[7:], known[1]))
        return tuple(out)

    def _named_grad_fns(self) -> dict[int, int]:
        """id(grad_fn) -> tid for the namespace's tensors: names nodes made in earlier cells."""
        found = {}
        for value in list(self._rec.namespace.values()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                found[id(value.grad_fn)] = self._rec.ids.tid(value)
        return found

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
            if isinstance(tensor, torch.Tensor) and tensor.is_leaf and tensor.grad is not None:
                grads[name] = grad_value(tensor.grad, self._before.get(info.tid))
            elif info.tid in self._hook_grads:
                grads[name] = grad_value(self._hook_grads[info.tid], source="hook")
        return grads

    def result_graphs(self, final: dict[str, TensorInfo], used: set[str], limit: int = 12) -> tuple[GraphSnapshot, ...]:
        """Graphs of named results that have a grad_fn: taken at the end of the cell."""
        live = self._rec.ids.live()
        out = []
        covered = {n.nid for e in self._events if e.graph for n in e.graph.nodes}
        for name, info in final.items():
            if info.grad_fn is None or base_name(name) not in used or info.node in covered:
                continue  # a backward's snapshot already holds this graph
            tensor = live.get(info.tid)
            if isinstance(tensor, torch.Tensor) and tensor.grad_fn is not None:
                out.append(self._snapshot([tensor], _Prepared()))
                if len(out) >= limit:
                    break
        return tuple(out)

    def close(self) -> None:
        self._hook_grads.clear()
        self._before.clear()


class _Prepared:
    """What one detailed backward collected before running."""

    def __init__(self) -> None:
        self.graph: GraphSnapshot | None = None
        self.leaves: list[torch.Tensor] = []
        self.leaf_grads: tuple[GradEvent, ...] = ()
        self.handles: list[Any] = []
        self.node_ids: set[int] = set()
        self.before: dict[int, Any] = {}
        self.named_nodes: dict[int, int] = {}
        self.stale: list[tuple[int, str, int]] = []
        self.torchviz: str | None = None
        self.inspected = 0

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.leaves.clear()


def _roots(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    first = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
    items = first if isinstance(first, (list, tuple)) else (first,)
    return [t for t in items if isinstance(t, torch.Tensor)]


def _with_calls(event: BackwardEvent, calls: int) -> BackwardEvent:
    from dataclasses import replace
    return replace(event, calls=calls)


def _node_meta(node: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of the tensor a node produced (its gradient's metadata)."""
    try:
        meta = node._input_metadata
        if not meta:
            return (), ""
        return tuple(meta[0].shape), str(meta[0].dtype).removeprefix("torch.")
    except (AttributeError, RuntimeError, IndexError, TypeError):
        return (), ""


def _saved_names_of(node: Any) -> tuple[str, ...]:
    names = _saved_names.get(type(node))
    if names is None:
        names = _saved_names[type(node)] = tuple(a for a in dir(node) if a.startswith("_saved_"))
    return names
