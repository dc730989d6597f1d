"""Run an OpInfo sample plain and under `Recorder`, and say how the two runs differ.

Used by test_crossref.py. One run makes the sample fresh from a fixed seed, calls
the op, and (for autograd samples) backpropagates fixed random grad_outputs; it
returns an `Outcome` of plain values: outputs, inputs after the call, gradients,
the exception, the warnings, the RNG state, and our internal failures.
"""

from __future__ import annotations

import random
import sys
import traceback
import types
import unittest
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_leaves

import autograd_magic.internal as internal
from autograd_magic import Recorder, build_report

SEED = 1234
SOURCE = "out = op(inp, *args, **kwargs)\ngrads = torch.autograd.backward(outs, grad_outputs)\n"


def load_databases() -> tuple[list[Any], list[Any]]:
    """PyTorch's op_db and autograd_function_db; torch's test utilities import expecttest, a test-only package."""
    if "expecttest" not in sys.modules:
        try:
            import expecttest  # noqa: F401
        except ImportError:  # only its TestCase base class is needed to import the databases
            stub = types.ModuleType("expecttest")
            stub.TestCase = unittest.TestCase  # type: ignore[attr-defined]
            sys.modules["expecttest"] = stub
    from torch.testing._internal.autograd_function_db import autograd_function_db
    from torch.testing._internal.common_methods_invocations import op_db

    return list(op_db), list(autograd_function_db)


@dataclass
class Outcome:
    """What one run of one sample did, as plain comparable values."""

    outputs: list[Any] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)  # after the call: in-place ops write them
    grads: list[Any] = field(default_factory=list)
    error: tuple[str, str, str] | None = None  # (stage, type, message)
    warnings: list[tuple[str, str, str, int]] = field(default_factory=list)
    rng: bytes = b""
    failures: list[str] = field(default_factory=list)  # internal.take_failures() and build_report errors
    where: str = ""  # the innermost frames of the exception, for the failure message


def make_samples(op: Any, dtype: torch.dtype, grad: bool, count: int) -> list[Any]:
    """The first ``count`` samples, made the same way every time (sample_inputs draws from the global RNG).

    ``sample_inputs_func`` directly: ``op.sample_inputs`` wraps it in an iterator that calls
    ``inspect.stack()`` per sample to find a unittest method, which under pytest costs ~0.2 s a call.
    """
    seed_everything(SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # making samples warns (beta layouts): not what is compared
        return list(islice(op.sample_inputs_func(op, "cpu", dtype, grad), count))


def seed_everything(seed: int) -> None:
    """torch's, Python's and NumPy's generators: sample functions draw from all three (margins, sizes)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def run_sample(op: Any, make: Callable[[], Any], grad: bool, recorded: bool) -> Outcome:
    """Make the sample, call ``op`` on it (and backward), plain or under a Recorder."""
    sample = make()
    args = list(sample.args)
    kwargs = dict(sample.kwargs)
    state: dict[str, Any] = {"stage": "forward"}
    outcome = Outcome()
    leaves = [t for t in tree_leaves([sample.input, args, kwargs]) if isinstance(t, torch.Tensor)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if recorded:
                namespace: dict[str, Any] = {"inp": sample.input, "args": args, "kwargs": kwargs}
                rec = Recorder(source=SOURCE, namespace=namespace)
                with rec:
                    _call(op, sample, args, kwargs, grad, state, namespace)
            else:
                _call(op, sample, args, kwargs, grad, state, {})
        except Exception as error:
            outcome.error = (state["stage"], type(error).__name__, str(error))
            outcome.where = "".join(traceback.format_exception(error, limit=-4))
    if recorded:
        outcome.failures = internal.take_failures()
        try:
            assert rec.trace is not None, "no trace"
            build_report(rec.trace)
        except Exception as error:
            outcome.failures.append(f"build_report: {type(error).__name__}: {error}")
    outcome.rng = bytes(torch.get_rng_state().numpy())
    outcome.warnings = [(w.category.__name__, str(w.message), w.filename, w.lineno) for w in caught]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying beta layouts warns; the copies are ours
        outcome.outputs = [snapshot(v) for v in tree_leaves(state.get("out"))]
        outcome.inputs = [snapshot(t) for t in leaves]
        outcome.grads = [None if t.grad is None else snapshot(t.grad) for t in leaves if t.is_leaf]
    return outcome


def _call(op: Any, sample: Any, args: list[Any], kwargs: dict[str, Any], grad: bool,
          state: dict[str, Any], namespace: dict[str, Any]) -> None:
    seed_everything(SEED + 1)
    out = op(sample.input, *args, **kwargs)
    state["out"] = namespace["out"] = out
    if not grad:
        return
    processed = sample.output_process_fn_grad(out)
    outs = [t for t in tree_leaves(processed) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outs:
        return
    with torch._C.DisableTorchFunction():  # the grad_outputs are the test's, not the op's: made the same way
        grad_outputs = fixed_grad_outputs(outs)
    state["stage"] = "backward"
    namespace["outs"] = outs
    torch.autograd.backward(outs, grad_outputs)


def fixed_grad_outputs(outs: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED + 2)
    return [torch.randn(t.shape, dtype=t.dtype, generator=gen) for t in outs]


def snapshot(value: Any) -> Any:
    """A detached copy of a tensor with its metadata, or the repr of anything else."""
    if not isinstance(value, torch.Tensor):
        return ("value", repr(value))
    with torch._C.DisableTorchFunction():
        meta = (value.dtype, tuple(value.shape), value.layout, value.requires_grad, value.is_leaf,
                type(value.grad_fn).__name__ if value.grad_fn is not None else None)
        strides = value.stride() if value.layout == torch.strided else None
        data = value.detach().clone()
    return ("tensor", meta, strides, data)


def differences(a: Outcome, b: Outcome, values: bool = True) -> list[str]:
    """How outcome ``b`` differs from ``a``: empty when the runs were the same.

    ``values=False`` compares the outputs' metadata only: ops such as ``torch.empty`` return
    uninitialised memory, whose values differ between any two runs.
    """
    found = []
    if a.error != b.error:
        found.append(f"exception: {a.error!r} != {b.error!r}")
    if a.warnings != b.warnings:
        found.append(f"warnings: {a.warnings!r} != {b.warnings!r}")
    if a.rng != b.rng:
        found.append("RNG state after the run differs")
    if b.failures:
        found.append(f"internal failures: {b.failures!r}")
    for what in ("outputs", "inputs", "grads"):
        mine, theirs = getattr(a, what), getattr(b, what)
        if len(mine) != len(theirs):
            found.append(f"{what}: {len(mine)} values != {len(theirs)}")
            continue
        for index, (x, y) in enumerate(zip(mine, theirs, strict=True)):
            problem = _compare(x, y, values or what != "outputs")
            if problem:
                found.append(f"{what}[{index}]: {problem}")
    return found


def _compare(x: Any, y: Any, values: bool) -> str | None:
    if x is None or y is None or x[0] != "tensor" or y[0] != "tensor":
        return None if x == y else f"{x!r} != {y!r}"
    if x[1] != y[1]:
        return f"metadata {x[1]} != {y[1]}"
    if x[2] != y[2]:
        return f"strides {x[2]} != {y[2]}"
    if not values:
        return None
    try:
        torch.testing.assert_close(y[3], x[3], rtol=0, atol=0, equal_nan=True, check_stride=False)
    except AssertionError as error:
        return f"values differ: {str(error).splitlines()[0]}"
    except Exception as error:  # layouts assert_close cannot compare
        return None if repr(x[3]) == repr(y[3]) else f"values differ ({type(error).__name__})"
    return None
