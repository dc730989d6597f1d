"""Gradient flow across the backward calls of a cell: the loss and each parameter's gradient norm, per step.

Every ``backward`` is a step, not only the first few that get a graph (a loop past `MAX_STEPS`
keeps every 2nd, 4th, ... step, so memory stays bounded): per step we read
the loss (when the root is one number) and the 2-norm of each tracked parameter's
``.grad`` — a handful of floats, bounded by `MAX_TRACKED` parameters. The parameters are
the named leaves the recorded backward graphs reached, plus the other trainable
parameters of the same modules (so one that never gets a gradient can be named).
The first `DENSE_RATIOS` steps, then every `RATIO_EVERY`-th (`UNWATCHED_RATIO_EVERY`-th in a loop run
unwatched), also get their update/weight ratios, from
copies of the small parameters taken at their backward and compared at the next one (`updates`); past
`MAX_RATIOS` such steps, only every 2nd (4th, ...) of those gets one, as the steps themselves are thinned
past `MAX_STEPS`.
Past a loop's recorded steps (optimizers.StepOut) backward runs unseen: each optimizer step's pre-hook
makes the step instead (`unwatched`), with the same norms and ratios; its loss is kept as a detached
view of the tensor the loop's loss name holds, and all those are read at once after the cell
(`result`), so a GPU loop is not synchronised at every step for its loss. There the reads are held to
`READ_BUDGET` of the loop's time: a small model's step is cheap next to them, so past the budget (and past
`MIN_ROWS` rows) the loop is thinned as past `MAX_STEPS`, at once to the stride the budget allows.
Every read goes through `reads` (quiet, guarded, no copy but those capped weight copies, which
are ours and freed with the cell) and none happens while a profiler records. Only weak references
to parameters are kept.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import replace
from typing import Any

import torch

from .. import internal
from ..trace.events import Binding, TrainingStep, TrainingTrace
from ..trace.names import base_name
from .namespace import module_tensors
from .reads import attempt, norms_of, profiling, quiet, scalar_of, scalars_of
from .tensors import Identity
from .updates import WeightCopies

MAX_TRACKED = 200  # parameters whose gradient norms are read at every step
MAX_STEPS = 200  # steps kept; past it every other one is dropped and only every 2nd (4th, ...) is read
# steps with an update/weight ratio: past it, half of them are dropped and the stride between rated steps
# doubles (every 8th, 16th, ...). Copying the weights and comparing them costs about as much memory traffic
# as a small model's own step
MAX_RATIOS = 32
# which kept steps get a ratio: each of the first DENSE_RATIOS (the first updates show a learning rate that
# is off), then every RATIO_EVERY-th. Rating every step only to thin them later computed twice what was kept
DENSE_RATIOS = 8
RATIO_EVERY = 4
# ...and every 8th in a loop run unwatched, not thinned yet, where our reads are all it costs: a ratio is the
# dearest read (a copy of the weights, then a subtraction and two norms at the next step: ~4 reads of norms)
UNWATCHED_RATIO_EVERY = 8
# an unwatched loop (see `unwatched`) spends at most this share of its time on our reads: past it, judged over
# BUDGET_READS reads, the stride jumps at once to the power of two that brings the reads within it (the stride
# only grows, as past MAX_STEPS; a read of a small model's norms and ratios can cost half its step)
READ_BUDGET = 0.02
BUDGET_READS = 2
MIN_ROWS = 32  # the budget never thins the loop to fewer kept steps: a plot needs its points
STEP_FUNCS = frozenset({"backward"})  # torch.Tensor.backward and torch.autograd.backward write .grad


class TrainingRecorder:
    """Reads a few numbers per backward call; `result` turns them into a `TrainingTrace`."""

    def __init__(self, ids: Identity) -> None:
        self._ids = ids
        self._names: list[str] = []
        self._refs: list[weakref.ref[torch.Tensor]] = []
        self._reached: list[bool] = []
        self._got_grad: list[bool] = []
        self._steps: list[TrainingStep] = []
        self._calls = 0
        self._unread = 0
        self._untracked: set[int] = set()  # tids past the cap
        self._line: int | None = None
        self._optimizer = False
        self._stride = 1
        self._copies = WeightCopies()
        self._ratios: dict[int, tuple[float | None, ...]] = {}  # step -> its update/weight ratios
        self._ratio_stride = RATIO_EVERY  # a multiple of _stride: the steps that get a ratio are kept steps
        self._losses: dict[int, torch.Tensor] = {}  # unwatched step -> its loss, detached, read in `result`
        self._unwatched_from: int | None = None
        self._window: list[Any] = [0.0, 0.0, 0]  # since the stride last changed: start, seconds reading, reads

    def track(self, leaves: list[torch.Tensor], bindings: list[Binding], namespace: dict[str, Any],
              line: int | None) -> None:
        """Add the named leaves a backward graph reached, and their modules' other trainable parameters."""
        if self._line is None:
            self._line = line
        try:
            with quiet():
                self._track(leaves, _named(namespace, self._ids) + bindings)
                self._optimizer = self._optimizer or _holds_optimizer(namespace)
        except Exception:
            internal.report_failure("choosing the parameters to follow")

    def note_optimizer(self) -> None:
        """A user function holds an optimizer in its locals (the namespace does not)."""
        self._optimizer = True

    def _track(self, leaves: list[torch.Tensor], bindings: list[Binding]) -> None:
        reached = {self._ids.tid(leaf) for leaf in leaves}
        first_name: dict[int, Binding] = {}
        for binding in bindings:
            first_name.setdefault(binding.tid, binding)
        named = [b for b in first_name.values() if b.tid in reached]
        modules = {base_name(b.name) for b in named if b.qualified}
        known = {id(ref()) for ref in self._refs}
        for binding in first_name.values():
            hit = binding.tid in reached
            if not hit and not (binding.qualified and base_name(binding.name) in modules):
                continue
            tensor = self._ids.get(binding.tid)
            if not isinstance(tensor, torch.Tensor) or id(tensor) in known or not _trainable(tensor):
                continue
            if len(self._names) >= MAX_TRACKED:
                self._untracked.add(binding.tid)
                continue
            self._names.append(binding.name)
            self._refs.append(weakref.ref(tensor))
            self._reached.append(hit)
            self._got_grad.append(False)
            known.add(id(tensor))

    def before(self, func: Any, roots: list[torch.Tensor]) -> float | None:
        """The loss, read before the call (backward does not change it)."""
        if getattr(func, "__name__", "") not in STEP_FUNCS or not roots or self._calls % self._stride:
            return None  # not a step, or one a long loop's thinning skips
        return attempt(lambda: scalar_of(roots[0]), None)

    def after(self, func: Any, loss: float | None, error: BaseException | None) -> None:
        """After a backward call: one step, with each tracked parameter's gradient norm; and the update
        since the previous call, when that one was a kept step."""
        if getattr(func, "__name__", "") not in STEP_FUNCS or error is not None:
            return
        self._advance(loss)

    def unwatched(self, loss: torch.Tensor | None) -> None:
        """Before an optimizer step of a loop running unwatched: the step its unseen backward made.
        ``loss``: what the loss's name holds now, kept (detached, no copy) and read after the cell."""
        start = time.perf_counter()
        if self._unwatched_from is None:
            self._unwatched_from = self._calls + 1
            self._window = [start, 0.0, 0]
        kept = not self._calls % self._stride
        if loss is not None and kept and not profiling():
            detached = attempt(lambda: _detached(loss), None)
            if detached is not None:
                self._losses[self._calls + 1] = detached
        self._advance(None)
        self._keep_to_budget(start, kept)

    def _keep_to_budget(self, start: float, kept: bool) -> None:
        """Past `READ_BUDGET` of the loop's time spent reading (judged over the reads since the stride last
        changed), the stride doubles until the reads fit, while more than `MIN_ROWS` steps are kept: the
        reads of a small model's step cost a large share of it. A loop of up to `MIN_ROWS` steps is never
        thinned, whatever the machine's speed: what a short loop shows does not depend on timing."""
        now = time.perf_counter()
        window = self._window
        window[1] += now - start
        window[2] += kept
        if window[2] < BUDGET_READS or len(self._steps) <= MIN_ROWS:
            return
        share = window[1] / max(now - window[0], 1e-9)  # doubling the stride halves it
        if share <= READ_BUDGET:
            return
        while share > READ_BUDGET and len(self._steps) > MIN_ROWS:
            self._thin()
            share /= 2
        # a ratio costs two reads (a weight copy, then the comparison at the next step): past the budget it
        # stays on every RATIO_EVERY-th kept step, where `_thin` alone would let it reach every kept step
        self._ratio_stride = max(self._ratio_stride, self._stride * RATIO_EVERY)
        self._window = [now, 0.0, 0]

    def _advance(self, loss: float | None) -> None:
        self._calls += 1
        kept = not (self._calls - 1) % self._stride
        compare = self._copies.taken_at == self._calls - 1
        if not kept and not compare:
            return
        if profiling():
            self._unread += kept
            self._copies.taken_at = None
            return
        try:
            with quiet():
                params = [ref() for ref in self._refs]
                grads = _grads_of(params) if kept else []
                copy = kept and self._ratio_due()
                if not copy and not compare:  # most steps of a long loop: the gradients' norms alone
                    self._step(grads, norms_of(grads), loss)
                    return
                ours = self._copies.measure(params, self._calls, copy)
                norms = norms_of(grads, ours)  # one batched pass: gradients, updates, weights
                ratios = self._copies.settle(norms[len(grads):], params, self._calls, copy)
                if compare:
                    self._add_ratios(self._calls - 1, ratios)
                if kept:
                    self._step(grads, norms[:len(grads)], loss)
                del grads, ours
        except Exception:
            internal.report_failure("reading gradient norms")

    def _ratio_due(self) -> bool:
        """This kept step copies the weights, so that the next backward call can measure the update."""
        if self._calls <= DENSE_RATIOS and self._ratio_stride == RATIO_EVERY:  # not thinned yet
            return True
        unthinned_unwatched = self._unwatched_from is not None and self._stride == 1
        every = max(self._ratio_stride, UNWATCHED_RATIO_EVERY) if unthinned_unwatched else self._ratio_stride
        return not (self._calls - 1) % every

    def _step(self, grads: list[torch.Tensor | None], norms: tuple[float | None, ...], loss: float | None) -> None:
        for i, grad in enumerate(grads):
            self._got_grad[i] = self._got_grad[i] or grad is not None
        self._steps.append(TrainingStep(self._calls, loss, norms))
        if len(self._steps) > MAX_STEPS:  # a long loop: keep its whole span, at half the density
            self._thin()

    def _thin(self) -> None:
        """Every other kept step goes, and from now on only every 2nd (4th, ...) step is read."""
        self._steps = self._steps[::2]
        self._stride *= 2
        self._ratio_stride = max(self._ratio_stride, self._stride)
        kept = {s.step for s in self._steps}
        self._ratios = {step: r for step, r in self._ratios.items() if step in kept}
        self._losses = {step: t for step, t in self._losses.items() if step in kept}

    def _add_ratios(self, step: int, ratios: tuple[float | None, ...]) -> None:
        self._ratios[step] = ratios
        if len(self._ratios) > MAX_RATIOS:  # as with the steps: the whole span, at half the density
            self._ratio_stride *= 2
            self._ratios = {s: r for s, r in self._ratios.items() if not (s - 1) % self._ratio_stride}

    def result(self) -> TrainingTrace | None:
        """The steps, or None when backward did not run more than once."""
        if self._calls < 2:
            return None
        losses = self._read_losses()
        steps = tuple(replace(s, update_ratios=self._ratios.get(s.step, s.update_ratios),
                              loss=losses.get(s.step, s.loss)) if s.step in self._ratios or s.step in losses else s
                      for s in self._steps)
        return TrainingTrace(parameters=tuple(self._names), reached=tuple(self._reached),
                             got_grad=tuple(self._got_grad), steps=steps,
                             line=self._line, untracked=len(self._untracked), unread=self._unread,
                             optimizer=self._optimizer, stride=self._stride,
                             calls=self._calls, no_ratio=self._copies.uncopied, unwatched_from=self._unwatched_from)

    def _read_losses(self) -> dict[int, float | None]:
        """The unwatched steps' losses, in one read (one GPU synchronisation for the whole loop)."""
        steps, tensors = list(self._losses), list(self._losses.values())
        self._losses = {}
        if not tensors or profiling():
            return {}
        return dict(zip(steps, scalars_of(tensors), strict=True))

    def close(self) -> None:
        self._refs.clear()
        self._losses.clear()
        self._copies.close()  # our copies go with the cell


def _named(namespace: dict[str, Any], ids: Identity) -> list[Binding]:
    """Module parameters by qualified name (``model.0.weight``), for modules the cell may have built itself."""
    found: list[Binding] = []
    for name, value in list(namespace.items()):
        if isinstance(value, torch.nn.Module) and not name.startswith("_"):
            found += _module_bindings(name, value, ids)
    return found


def _module_bindings(name: str, module: torch.nn.Module, ids: Identity) -> list[Binding]:
    try:
        pairs = module_tensors(name, module)
    except Exception:  # a half-built module, a proxy: costs only its own names
        return []
    return [Binding(qualified, ids.tid(tensor), 0, None, True) for qualified, tensor in pairs]


def _holds_optimizer(namespace: dict[str, Any]) -> bool:
    return any(isinstance(value, torch.optim.Optimizer) for value in list(namespace.values()))


def _trainable(tensor: torch.Tensor) -> bool:
    return bool(attempt(lambda: tensor.is_leaf and tensor.requires_grad, False))


def _grads_of(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Each parameter's ``.grad``, in one guarded pass (one per parameter only when one of them raises)."""
    try:
        return [None if tensor is None else tensor.grad for tensor in tensors]
    except Exception:  # a lazy or exotic parameter: only its own gradient is left out
        return [_grad_of(tensor) for tensor in tensors]


def _grad_of(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else attempt(lambda: tensor.grad, None)


def _detached(loss: torch.Tensor) -> torch.Tensor | None:
    """A detached view of a one-element loss (no copy, no graph kept), or None for anything else."""
    with quiet():
        if type(loss) not in (torch.Tensor, torch.nn.Parameter) or loss.numel() != 1:
            return None
        return loss.detach()
