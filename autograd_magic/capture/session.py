"""What autograd_magic remembers between cells, without keeping tensors alive.

Both registries are keyed weakly by tensor identity: when the user drops a
tensor, what we knew about it goes too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ..trace.events import OpEvent, Site, TensorInfo

MAX_CHAIN = 12  # ops of provenance kept per tensor


class GradHistory:
    """Which call site last wrote each leaf's ``.grad``, across cells."""

    def __init__(self) -> None:
        self._site: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def last_site(self, leaf: torch.Tensor) -> tuple[int | None, str] | None:
        return self._site.get(leaf)

    def wrote(self, leaf: torch.Tensor, site: Site) -> None:
        self._site[leaf] = (site.line, site.code)


class Origins:
    """How each tensor a recorded cell produced was made: the chain of ops, nearest first."""

    def __init__(self) -> None:
        self._chains: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def remember(self, tensors: dict[int, torch.Tensor], ops: tuple[OpEvent, ...], cell: int | None) -> None:
        """Store the chain of every tensor (tid -> tensor) that ``ops`` produced."""
        made_by = producers(ops)
        for tid, tensor in tensors.items():
            chain = producer_chain(made_by, tid)
            if chain:
                self._chains[tensor] = (tid, tuple(_in_cell(op, cell) for op in chain))

    def chain_for(self, tensor: torch.Tensor, new_tid: int) -> tuple[OpEvent, ...] | None:
        """The stored chain, its ids rewritten: ``new_tid`` for the tensor, negatives for the rest."""
        stored = self._chains.get(tensor)
        if stored is None:
            return None
        old_tid, chain = stored
        return tuple(_renumber(op, old_tid, new_tid) for op in chain)


class Session:
    """Everything kept across the cells of one IPython session."""

    def __init__(self) -> None:
        self.grads = GradHistory()
        self.origins = Origins()
        self.values: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> (node_key(grad_fn), version, value)


def producers(ops: tuple[OpEvent, ...] | list[OpEvent]) -> dict[int, OpEvent]:
    """tid -> the last op that produced it: out of place, or in place when its result was bound to a name
    (``d = torch.matmul(a, b, out=c)`` is how ``d`` came to be ``c``)."""
    made_by: dict[int, OpEvent] = {}
    for op in ops:
        if (not op.inplace or op.target is not None) and not op.error:
            for out in op.outputs:
                made_by[out.tid] = op
    return made_by


def producer_chain(made_by: dict[int, OpEvent], tid: int) -> list[OpEvent]:
    """Ops that produced ``tid``, nearest first, following each op's first input."""
    chain: list[OpEvent] = []
    seen: set[int] = set()
    current: int | None = tid
    while current is not None and current in made_by and current not in seen and len(chain) < MAX_CHAIN:
        seen.add(current)
        op = made_by[current]
        chain.append(op)
        current = op.inputs[0].tid if op.inputs else None
    return chain


def _in_cell(op: OpEvent, cell: int | None) -> OpEvent:
    return replace(op, site=replace(op.site, cell=cell))


def _renumber(op: OpEvent, old_tid: int, new_tid: int) -> OpEvent:
    def fix(info: TensorInfo) -> TensorInfo:
        return replace(info, tid=new_tid if info.tid == old_tid else -abs(info.tid) - 1_000_000, node=None)

    return replace(op, inputs=tuple(map(fix, op.inputs)), outputs=tuple(map(fix, op.outputs)))


def remembered(namespace: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    return [(n, v) for n, v in namespace.items() if isinstance(v, torch.Tensor) and not n.startswith("_")]
