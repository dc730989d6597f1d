"""A tensor's value as plain data: the few numbers of a small tensor, a summary of a big one.

Read through `reads` (quietly, never while a profiler records): a small tensor's
values are listed, a bigger one gets its norm, min and max (reductions in its own
dtype, no copy), a huge one only its shape.
"""

from __future__ import annotations

from typing import Any

import torch

from ..trace.events import TensorValue
from .reads import profiling, quiet, shape_of, summary_of

LISTED = 8  # elements: a tensor this small is shown as its values
SUMMARISED = 1_000_000  # elements: above this only the shape is kept (min/max would cost too much)


def value_of(t: Any) -> TensorValue | None:
    """``t``'s value made plain, or None when it is not a tensor or must not be read now."""
    if not isinstance(t, torch.Tensor):
        return None
    read = summary_of(t, LISTED, SUMMARISED)
    if read is None:
        if profiling():
            return None
        with quiet():
            return TensorValue(shape_of(t))
    shape, values, norm, low, high = read
    return TensorValue(shape, values) if values is not None else TensorValue(shape, None, norm, low, high)
