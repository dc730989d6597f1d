"""What a backward node saved, in words a learner can read.

Capture gives ``GraphNode.saved`` strings like ``"self: (3, 2)"``, ``"other: freed"`` or
``"result: hidden by a saved_tensors_hooks"``: the argument name autograd uses, then free
text. The views show them as one sentence (tooltip, node details, text) instead of a box per
saved tensor, naming which input each one was and why backward keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
