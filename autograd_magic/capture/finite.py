"""Notice an op whose floating output holds nan or ±inf, and what its inputs held at that moment.

Each op recorded in detail gets one fused check per floating output (`reads.all_finite`: a sum and
one read back); only an op whose output fails it has its output and inputs counted
(`reads.counts_of`), so correct code pays one reduction per recorded op and nothing past the
recording cap. No anomaly mode, no hook.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..trace.events import NonFinite, Stats
from .reads import all_finite, attempt, counts_of, quiet, scalar_of
from .tensors import is_array

SCALER_FILE = "grad_scaler.py"
UPDATE_SCALE = "_amp_update_scale_"  # what GradScaler.update() calls with the step's found-inf flag
MAX_SCANNED = 10_000  # Python numbers looked at in one argument list (torch.tensor([...]) of a big list)


def non_finite(name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, result: Any, inplace: bool,
               caller_file: str) -> NonFinite | None:
    """A `NonFinite` when one of the op's floating outputs holds nan or ±inf, else None (the usual case)."""
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    bad = next((out for out in outputs if isinstance(out, torch.Tensor) and all_finite(out) is False), None)
    if bad is None:
        return None
    output = stats_of(bad)
    if output is None:
        return None
    inputs = tuple(None if inplace and index == 0 else stats_of(item)
                   for index, item in enumerate(_inputs(args, kwargs)))
    written = _written(name, args, kwargs, inputs, caller_file)
    return NonFinite(output, inputs, written, attempt(lambda: float(torch.finfo(bad.dtype).max), math.inf))


def stats_of(t: Any) -> Stats | None:
    counts = counts_of(t) if isinstance(t, torch.Tensor) else None
    return None if counts is None else Stats(*counts)


def _inputs(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> list[Any]:
    """The tensors and arrays in the order `Recorder._describe_all` lists them (an array: None)."""
    values = [*args, *(kwargs.values() if kwargs else ())]
    found: list[Any] = []
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, torch.Tensor):
                found.append(item)
            elif is_array(item):
                found.append(None)
    return found


def _written(name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None, inputs: tuple[Stats | None, ...],
             caller_file: str) -> str:
    """Why the value is not the op's own doing ("" when it is: see `NonFinite.written`)."""
    if caller_file.endswith(SCALER_FILE):
        return "scaler"
    if name.endswith("__get__"):
        return "read"
    if _holds_non_finite_number([*args, *(kwargs.values() if kwargs else ())]) or not inputs:
        return "value"
    return ""


def _holds_non_finite_number(values: list[Any]) -> bool:
    """A nan or inf Python number among the arguments (nested lists too, up to `MAX_SCANNED` items)."""
    stack, scanned = list(values), 0
    while stack and scanned < MAX_SCANNED:
        item = stack.pop()
        scanned += 1
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def scaler_scales(namespace: dict[str, Any]) -> tuple[float, ...]:
    """The scale each enabled ``torch.amp.GradScaler`` the cell's namespace holds settled on (read quietly)."""
    kind: Any = getattr(getattr(torch, "amp", None), "GradScaler", None)
    if not isinstance(kind, type):
        return ()
    found = []
    with quiet():
        scalers: list[Any] = [v for v in list(namespace.values()) if isinstance(v, kind)]
        for scaler in scalers:
            if attempt(scaler.is_enabled, False):
                scale = attempt(scaler.get_scale, None)
                if isinstance(scale, float):
                    found.append(scale)
    return tuple(found)


def scaler_update(name: str, args: tuple[Any, ...], result: Any,
                  caller_file: str) -> tuple[float | None, float | None] | None:
    """(found inf, new scale) of a GradScaler's ``update()``: whether it skipped the step, and its scale after."""
    if name != UPDATE_SCALE or not caller_file.endswith(SCALER_FILE) or len(args) < 3:
        return None
    found, scale = args[2], result
    return (scalar_of(found) if isinstance(found, torch.Tensor) else None,
            scalar_of(scale) if isinstance(scale, torch.Tensor) else None)
