"""A tensor's value as plain data: the few numbers of a small tensor, a summary of a big one.

Read through `reads` (quietly, never while a profiler records): a small tensor's
values are listed, a bigger one gets its norm, min and max (reductions in its own
dtype, no copy), a huge one only its shape.
"""

from __future__ import annotations

from typing import Any

import torch

from ..trace.events import TensorValue
from .reads import attempt, is_plain, norm_of, profiling, quiet, shape_of, small_values

LISTED = 8  # elements: a tensor this small is shown as its values
SUMMARISED = 1_000_000  # elements: above this only the shape is kept (min/max would cost too much)


def value_of(t: Any) -> TensorValue | None:
    """``t``'s value made plain, or None when it is not a tensor or must not be read now."""
    if not isinstance(t, torch.Tensor) or profiling():
        return None
    shape = shape_of(t)
    count = attempt(t.numel, SUMMARISED + 1)
    if count <= LISTED:
        values = small_values(t)
        if values is not None:
            return TensorValue(shape, values)
    if count > SUMMARISED or not is_plain(t) or attempt(t.is_complex, True):
        return TensorValue(shape)
    low, high = _extremes(t) if count else (None, None)
    return TensorValue(shape, None, norm_of(t), low, high)


def _extremes(t: torch.Tensor) -> tuple[float | None, float | None]:
    with quiet(), torch.no_grad():
        both = attempt(lambda: torch.aminmax(t.detach()), None)  # one pass for both
        if both is None:
            return None, None
        return attempt(lambda: float(both[0]), None), attempt(lambda: float(both[1]), None)
