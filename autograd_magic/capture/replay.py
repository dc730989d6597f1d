"""Watch autograd's engine run one backward call: which node ran when, what it got and sent.

For the duration of one detailed backward, every node of the graph gets a post
hook (``node.register_hook``): the engine calls it right after the node ran, with
the gradients that arrived (``grad_outputs``) and those it sends along each input
edge (``grad_inputs``). Each gradient is summarised at once, quietly, into plain
data (`values.value_of`); no gradient and no node is kept. The hooks are removed
when the backward returns or raises (see backward.BackwardRecorder).

What one node sends along an edge is usually the very tensor the next node receives (and a
leaf's new ``.grad``): its summary is reused while that tensor (held weakly, never kept alive)
is unchanged, its version included, so accumulating into it in place is read again. (A write
through ``.data`` bumps no version; a hook that wrote a gradient that way would show its old value.)
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import torch

from .. import internal
from ..trace.events import ReplayStep, TensorValue
from .compat import version_of
from .reads import attempt, grad_fn_of, grad_of, next_functions, quiet
from .tensors import Identity
from .values import value_of

MAX_HOOKED = 2000  # nodes per backward that get a hook: a bigger graph is replayed near its root only
MAX_STEPS = 500  # steps recorded per backward; later ones are counted


class Replay:
    """The steps of one backward call, recorded by hooks that live only while it runs."""

    def __init__(self, ids: Identity) -> None:
        self._ids = ids
        self.steps: list[ReplayStep] = []
        self.dropped = 0
        self._handles: list[Any] = []
        self._summaries: dict[int, tuple[weakref.ref[torch.Tensor], int, TensorValue | None]] = {}

    def attach(self, roots: list[torch.Tensor]) -> None:
        """Hook every node reachable from ``roots`` (breadth-first, up to the cap); all or none."""
        try:
            self._attach(roots)
        except BaseException:
            self.detach_hooks()  # our caller cannot remove what it never got back
            raise

    def _attach(self, roots: list[torch.Tensor]) -> None:
        with quiet():
            for node in _reachable(roots, MAX_HOOKED):
                targets = tuple(self._ids.node(child) if child is not None else None
                                for child, _ in next_functions(node))
                variable = getattr(node, "variable", None)
                watch = _LeafWatch(variable, self.value) if isinstance(variable, torch.Tensor) else None
                self._handles.append(node.register_hook(self._hook(self._ids.node(node), type(node).__name__,
                                                                   targets, watch)))

    def detach_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._summaries.clear()

    def value(self, grad: Any) -> TensorValue | None:
        """`value_of`, reused for the same unchanged tensor within this backward."""
        if not isinstance(grad, torch.Tensor):
            return None
        version = attempt(lambda: version_of(grad), -1)
        seen = self._summaries.get(id(grad))
        if seen is not None and seen[0]() is grad and seen[1] == version >= 0:
            return seen[2]
        value = value_of(grad)
        with contextlib.suppress(TypeError):  # a tensor type without weak references: summarised every time
            self._summaries[id(grad)] = (weakref.ref(grad), version, value)
        return value

    def _hook(self, nid: int, label: str, targets: tuple[int | None, ...],
              watch: _LeafWatch | None) -> Callable[[tuple[Any, ...], tuple[Any, ...]], None]:
        def ran(grad_inputs: tuple[Any, ...], grad_outputs: tuple[Any, ...]) -> None:
            if len(self.steps) >= MAX_STEPS:
                self.dropped += 1
                return
            try:
                with quiet():
                    self.steps.append(_step(nid, label, targets, grad_inputs, grad_outputs, watch, self.value))
            except Exception:
                internal.report_failure("replaying a backward step")
        return ran


class _LeafWatch:
    """A leaf's ``.grad`` before this backward, and a weak way back to read it after its step."""

    def __init__(self, leaf: torch.Tensor, value: Callable[[Any], TensorValue | None]) -> None:
        self.leaf = weakref.ref(leaf)
        self._value = value
        grad = grad_of(leaf)
        self.before = value_of(grad) if isinstance(grad, torch.Tensor) else None

    def after(self) -> TensorValue | None:
        leaf = self.leaf()
        return self._value(grad_of(leaf)) if leaf is not None else None


def _step(nid: int, label: str, targets: tuple[int | None, ...], grad_inputs: tuple[Any, ...],
          grad_outputs: tuple[Any, ...], watch: _LeafWatch | None,
          value: Callable[[Any], TensorValue | None]) -> ReplayStep:
    arrived = tuple(value(g) for g in grad_outputs)
    sent = tuple((target, value(g)) for target, g in zip(targets, grad_inputs, strict=False)
                 if target is not None and isinstance(g, torch.Tensor))
    if watch is None:
        return ReplayStep(nid, label, arrived, sent)
    return ReplayStep(nid, label, arrived, sent, watch.before, watch.after())


def _reachable(roots: list[torch.Tensor], limit: int) -> list[Any]:
    start = [fn for fn in map(grad_fn_of, roots) if fn is not None]
    seen = {id(n) for n in start}
    order = list(start)
    index = 0
    while index < len(order) and len(order) < limit:
        for child, _ in next_functions(order[index]):
            if child is not None and id(child) not in seen and len(order) < limit:
                seen.add(id(child))
                order.append(child)
        index += 1
    return order
