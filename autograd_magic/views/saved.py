"""What a backward node saved, in words a learner can read.

Capture gives ``GraphNode.saved`` strings like ``"self: (3, 2)"``, ``"other: freed"`` or
``"result: hidden by a saved_tensors_hooks"``: the argument name autograd uses, then free
text. The views show them as one sentence (tooltip, node details, text) instead of a box per
saved tensor, naming which input each one was and why backward keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..report.model import Graph, Holder, Node, size_text

# autograd's names for a function's saved arguments, as a learner would say them
ROLES = {
    "self": "its first input", "other": "its second input", "input": "its input", "result": "its own output",
    "mat1": "the first matrix", "mat2": "the second matrix", "vec": "the vector", "weight": "the weight",
    "exponent": "the exponent", "tensor": "the tensor", "mask": "the mask", "indices": "the indices",
}
_ONE_DIM = re.compile(r"^\((\d+),\)$")
_SHAPE = re.compile(r"^\(\d+(?:, \d+)*\)$")
WHY = "kept for backward, because this node's gradient formula needs it"


def saved_items(saved: Iterable[str]) -> list[str]:
    """``["its first input (self): a (3, 2) tensor", "its second input (other): freed by backward()"]``."""
    return [_item(entry) for entry in saved]


def saved_sentence(saved: Iterable[str]) -> str:
    items = saved_items(saved)
    what = "; ".join(items)
    return f"saved {what} — {WHY.replace('needs it', 'needs them' if len(items) > 1 else 'needs it')}"


def _item(entry: str) -> str:
    name, sep, rest = entry.partition(":")
    if not sep:
        return entry.strip()
    name, rest = name.strip(), rest.strip()
    role = ROLES.get(name)
    who = f"{role} (`{name}`)" if role else f"`{name}`"
    return f"{who}: {_what(rest)}"


def _what(text: str) -> str:
    """A shape as a phrase (the views write shapes one way: `(1)`, `(3, 2)`, `scalar`); other text as is."""
    if text == "()":
        return "a scalar"
    one = _ONE_DIM.match(text)
    if one:
        return f"a ({one.group(1)}) tensor"
    if _SHAPE.match(text):
        return f"a {text} tensor"
    if text == "freed":
        return "freed by backward() (the graph no longer holds it)"
    return text


# -- memory kept for backward ---------------------------------------------------------------------
def kept_sentence(node: Node) -> str:
    """``keeps 1.5 MiB for backward (also saves w, which lives anyway)``; empty when it keeps nothing."""
    parts = []
    if node.saved_bytes:
        folded = " (all of them together)" if node.repeat > 1 or node.kind == "module" else ""
        parts.append(f"keeps {size_text(node.saved_bytes)} for backward{folded}")
    if node.saved_apart:
        names = ", ".join(node.saved_apart[:4]) + (", …" if len(node.saved_apart) > 4 else "")
        parts.append(f"also saves {names}, which {'live' if len(node.saved_apart) > 1 else 'lives'} anyway")
    return "; ".join(parts)


def memory_lines(graph: Graph) -> list[str]:
    """The "memory kept for backward" line under a graph, then its biggest holders."""
    memory = graph.memory
    if memory is None:
        return []
    until = "freed when backward runs" if graph.backward else "held for as long as its result is kept"
    head = (f"memory kept for backward: {size_text(memory.saved_bytes)} in {memory.tensors} "
            f"tensor{'s' if memory.tensors != 1 else ''}, {until}")
    extra = []
    if memory.apart:
        names = ", ".join(memory.apart[:5]) + (", …" if len(memory.apart) > 5 else "")
        extra.append(f"saved too, living anyway: {size_text(memory.apart_bytes)} ({names})")
    if memory.unread:
        extra.append(f"{memory.unread} node{'s' if memory.unread != 1 else ''} not read (past the read cap or "
                     f"packed by a saved_tensors_hooks)")
    lines = [head + (f"; {'; '.join(extra)}" if extra else "")]
    lines.extend(f"  {size_text(h.saved_bytes):>10}  {_holder_text(h)}" for h in memory.holders)
    return lines


def _holder_text(holder: Holder) -> str:
    where = f"line {holder.line}: `{_clip(holder.code)}`" if holder.line is not None else "(its line is not known)"
    count = f" ×{holder.count}" if holder.count > 1 else ""
    inside = f" in {holder.module}" if holder.module else ""
    name = f" → {holder.name}" if holder.name else ""
    return f"{holder.label}{count}{inside}{name}  {where}"


def _clip(code: str, width: int = 60) -> str:
    return code if len(code) <= width else code[: width - 1] + "…"
