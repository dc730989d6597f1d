""""Why is this gradient what it is?": one plain answer per named tensor (``report.why("x")``).

The answers name lines (the source's own, as tracebacks count them) and variables: why
``.grad`` is None (no grad required, not a leaf, the path was cut, no backward reached
it), why it is zero (where the replay saw the gradient stop), or how it was summed.
"""

from __future__ import annotations

import math
from itertools import islice

from ..report.model import Cut, GradRow, Replay, Step, flatten
from ..trace.events import CUT_FUNCS, BackwardEvent, OpEvent, Trace
from .formulas import number, value_text
from .naming import Names
from .nonfinite import origin_words

_MAKERS = {"tensor": "torch.tensor", "as_tensor": "torch.as_tensor", "from_numpy": "torch.from_numpy"}
_DETACHERS = {"detach": ".detach()", "detach_": ".detach_()", "data.__get__": ".data"}


def why_answers(trace: Trace, names: Names, grads: dict[str, GradRow], replays: list[Replay],
                cuts: list[Cut], shown: list[str]) -> dict[str, str]:
    """name -> the answer, for every tensor the report lists."""
    ask = _Asker(trace, names, grads, replays, cuts)
    return {name: ask.why(name) for name in shown if name in trace.final}


class _Asker:
    def __init__(self, trace: Trace, names: Names, grads: dict[str, GradRow], replays: list[Replay],
                 cuts: list[Cut]) -> None:
        self.trace, self.names, self.grads, self.replays, self.cuts = trace, names, grads, replays, cuts

    def line(self, line: int | None) -> str:
        return "line ?" if line is None else f"line {line}"

    def why(self, name: str) -> str:
        info = self.trace.final[name]
        grad = self.grads.get(name)
        if grad is not None and grad.source == "leaf":
            return self._has_grad(name, info.tid, grad)
        if not info.requires_grad:
            return self._no_grad_required(name, info.tid)
        if not info.is_leaf:
            return self._not_a_leaf(name, info.tid, info.grad_fn, grad)
        return self._not_reached(name, info.tid)

    # -- .grad is set ---------------------------------------------------------------------------------
    def _has_grad(self, name: str, tid: int, grad: GradRow) -> str:
        sites = {(e.site.line, e.site.code): e.calls for e in self._reaching(tid) if e.error is None}
        count = sum(sites.values())  # each event carries the count of its whole call site
        where = ", ".join(self.line(line) + (f" ×{n}" if n > 1 else "") for (line, _), n in sites.items())
        calls = list(sites)
        text = f"{name}.grad is {_values(grad.values, grad.norm)}"
        if count > 1:
            text += (f": the sum of {count} backward calls ({where}), because .grad accumulates: each backward "
                     f"adds onto it. Set {name}.grad = None (or call optimizer.zero_grad()) between them")
        elif grad.before is not None:
            text += (f": the backward at {where} added onto the {_values(grad.before, None)} already in "
                     f"{name}.grad (from an earlier cell), because .grad accumulates")
        elif calls:
            text += f", from backward() at {where}"
        stop = self._stopped(tid) if _all_zero(grad.values, grad.norm) else self._non_finite(grad)
        summed = self._summed_at(tid)
        return text + (f". {stop}" if stop else "") + (f". {summed}" if summed and not stop else "") + "."

    def _non_finite(self, grad: GradRow) -> str:
        """Where a nan/inf gradient started (see the non-finite diagnostic)."""
        numbers = list(flatten(grad.values)) if grad.values is not None else [grad.norm]
        if all(not isinstance(v, float) or math.isfinite(v) for v in numbers):
            return ""
        where = origin_words(self.trace)
        return f"It is not finite because the nan/inf started {where} (see the non-finite diagnostic)" if where else ""

    def _stopped(self, tid: int) -> str:
        """Where the replay saw a nonzero gradient turn into zero on the way to ``tid``."""
        for replay in self.replays:
            for step in replay.steps:
                got = [v for v in step.arrived if v is not None]
                if got and not all(_is_zero(v) for v in got) and any(_is_zero(f.value) for f in step.sent):
                    who = f"{step.label}" + (f" ({step.name} = {step.code})" if step.name and step.code else "")
                    sent = next(f.value for f in step.sent if _is_zero(f.value))
                    return (f"It is zero because the gradient stopped at {who} at {self.line(step.line)}: "
                            f"it got {value_text(got[0])} and sent {value_text(sent)}; {step.words}")
        return "It is zero because every gradient that reached it was 0"

    def _summed_at(self, tid: int) -> str:
        for replay in self.replays:
            for step in replay.steps:
                if step.label == "AccumulateGrad" and step.summed and tid in self._leaf_tids(step):
                    return f"{len(step.summed.split(' + '))} paths met there: {step.summed}"
        return ""

    def _leaf_tids(self, step: Step) -> set[int]:
        return {self.names.tid_of[n] for n in (step.name or "").split(", ") if n in self.names.tid_of}

    # -- .grad is None --------------------------------------------------------------------------------
    def _no_grad_required(self, name: str, tid: int) -> str:
        op = self._maker(tid)
        text = f"{name}.grad is None because {name} does not require grad"
        if op is None:
            return text + f": create it with requires_grad=True or call {name}.requires_grad_()."
        maker = _MAKERS.get(op.func)
        if maker:
            text += (f": it was made by {maker} at {self.line(op.site.line)} (`{op.site.code.strip()}`), "
                     "which copies values into a new tensor with no graph behind it")
        elif op.func in _DETACHERS:
            text += (f": it was made by {_DETACHERS[op.func]} at {self.line(op.site.line)} (`{op.site.code.strip()}`), "
                     "which gives the same values cut off from the graph (no grad_fn, requires_grad=False)")
            return text + (f"; keep using the tensor it came from for anything that needs a gradient, "
                           f"and call {_DETACHERS[op.func]} only on what you log or plot.")
        elif not op.grad_enabled:
            text += f": it was made under torch.no_grad() at {self.line(op.site.line)}"
        else:
            text += f": it was made at {self.line(op.site.line)} (`{op.site.code.strip()}`) from tensors that do not"
        cut = self._cut_before(op.site.line) if op.grad_enabled else ""
        return text + (f"; {cut}" if cut else "") + "."

    def _not_a_leaf(self, name: str, tid: int, grad_fn: str | None, grad: GradRow | None) -> str:
        op = self._maker(tid)
        how = f" by `{op.site.expr or op.site.code.strip()}` at {self.line(op.site.line)}" if op else ""
        leaf = self._leaf_behind(op)
        text = (f"{name}.grad is None because {name} is not a leaf: it was made{how} ({grad_fn}), and backward "
                "fills .grad only for leaves")
        if leaf:
            text += f". The {'leaves are' if ' and ' in leaf else 'leaf is'} {leaf}: .grad is filled there"
        if grad is not None:
            text += f". During backward {name}'s gradient was {_values(grad.values, grad.norm)}"
        return text + f" (call {name}.retain_grad() before backward to keep it)."

    def _not_reached(self, name: str, tid: int) -> str:
        backs = self.trace.backwards
        cut = self._cut_before(None)
        if not backs:
            return f"{name}.grad is None because no backward() ran in this cell."
        failed = [e for e in backs if e.error]
        if failed:
            e = failed[0]
            text = (f"{name}.grad is None because no backward reached it: backward() at {self.line(e.site.line)} "
                    f"raised {(e.error or '').splitlines()[0]}")
            return text + (f"; {cut}" if cut else "") + "."
        roots = ", ".join(sorted({self._root(e) for e in backs}))
        text = (f"{name}.grad is None because backward was called on {roots}, whose graph does not reach {name} "
                f"({name} was not used to compute it)")
        return text + (f"; {cut}" if cut else "") + "."

    # -- helpers -----------------------------------------------------------------------------------------
    def _reaching(self, tid: int) -> list[BackwardEvent]:
        return [e for e in self.trace.backwards if e.graph and any(n.tid == tid for n in e.graph.nodes)]

    def _maker(self, tid: int) -> OpEvent | None:
        made = [op for op in self.trace.ops if not op.error and any(o.tid == tid for o in op.outputs)]
        return made[-1] if made else None

    def _leaf_behind(self, op: OpEvent | None) -> str | None:
        """The leaves the recorded ops made ``op``'s result from, by name (or by the code that made them)."""
        leaves: dict[int, str] = {}
        todo, seen = [op] if op is not None else [], 0
        while todo and seen < 200:
            current = todo.pop()
            seen += 1
            for info in current.inputs:
                if info.requires_grad and info.is_leaf and info.tid not in leaves:
                    leaves[info.tid] = self._leaf_name(info.tid)
                elif info.requires_grad and not info.is_leaf:
                    maker = self._maker(info.tid)
                    todo += [maker] if maker is not None else []
        if not leaves:
            return None
        named = sorted(leaves.values())
        return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]

    def _leaf_name(self, tid: int) -> str:
        name = self.names.label(tid)
        if name:
            return name
        op = self._maker(tid)
        if op is None:
            return "an unnamed tensor"
        return (f"the unnamed `{op.site.expr or op.site.code.strip()}` of {self.line(op.site.line)} (keep it in a "
                "variable to read its .grad)")

    def _cut_before(self, line: int | None) -> str:
        found = [c for c in self.cuts if line is None or c.line is None or c.line <= line]
        if not found:
            return ""
        lines = sorted({c.line for c in found if c.line is not None})
        on_lines = [op.func for op in self.trace.ops if op.site.line in lines and op.func in CUT_FUNCS]
        hows = " → ".join(dict.fromkeys([*(_how(CUT_FUNCS[f]) for f in on_lines), *(_how(c.how) for c in found)]))
        at = " and ".join(self.line(n) for n in lines)
        return f"the path was cut at {at} by {hows}, so no gradient can flow back through it"

    def _root(self, event: BackwardEvent) -> str:
        name = self.names.label(event.root.tid) if event.root else None
        what = name or f"`{event.site.code.strip()}`"
        return f"{what} ({self.line(event.site.line)})"


def _how(how: str) -> str:
    return {"detach": ".detach()", "numpy": ".numpy()", "item": ".item()", "tolist": ".tolist()",
            "no_grad": "torch.no_grad()", "tensor": "torch.tensor"}.get(how, how)


def _values(values: object, norm: float | None) -> str:
    if values is None:
        return f"a tensor of norm {norm:.4g}" if norm is not None else "a big tensor"
    flat = list(islice(flatten(values), 13))  # what the sentence shows: a gradient may list 1,000 numbers
    return number(flat[0]) if len(flat) == 1 else "[" + ", ".join(number(v) for v in flat[:12]) + \
        (", ...]" if len(flat) > 12 else "]")


def _is_zero(value: object) -> bool:
    if value is None:
        return False
    values, norm = getattr(value, "values", None), getattr(value, "norm", None)
    return _all_zero(values, norm)


def _all_zero(values: object, norm: float | None) -> bool:
    if values is not None:
        return all(v == 0 for v in flatten(values))
    return norm == 0

