"""Find the tensors a namespace names, including module parameters by qualified name."""

from __future__ import annotations

import types
from typing import Any

import torch

from ..trace.events import TensorInfo
from .tensors import Identity, describe, describe_tensor

MAX_MODULE_TENSORS = 500  # per module: enough for any model a person reads in a table
_IGNORED = frozenset({"In", "Out", "exit", "quit", "get_ipython"})
# values that can hold no tensor, skipped by type alone: a notebook's namespace has thousands of them,
# and it is scanned before and after every cell
_NEVER_TENSORS = frozenset({int, float, complex, bool, str, bytes, type(None), types.FunctionType,
                            types.BuiltinFunctionType, types.ModuleType, type})


def scan_namespace(namespace: dict[str, Any], ids: Identity) -> dict[str, tuple[TensorInfo, bool]]:
    """name -> (info, is_qualified_module_name) for every tensor or array named."""
    found: dict[str, tuple[TensorInfo, bool]] = {}
    for name, value in list(namespace.items()):
        if type(value) in _NEVER_TENSORS or name.startswith("_") or name in _IGNORED:
            continue
        try:
            found.update(_describe_named(name, value, ids))
        except Exception:  # one odd object (a half-built module, a proxy) costs only its own row
            continue
    return found


def _describe_named(name: str, value: Any, ids: Identity) -> dict[str, tuple[TensorInfo, bool]]:
    info = describe(value, ids)
    if info is not None:
        return {name: (info, False)}
    if isinstance(value, torch.nn.Module):
        return {qualified: (describe_tensor(tensor, ids), True) for qualified, tensor in module_tensors(name, value)}
    return {}


def module_tensors(name: str, module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    out: list[tuple[str, torch.Tensor]] = []
    for qualified, tensor in module.named_parameters(prefix=name):
        out.append((qualified, tensor))
        if len(out) >= MAX_MODULE_TENSORS:
            return out
    for qualified, buffer in module.named_buffers(prefix=name):
        if buffer is not None:
            out.append((qualified, buffer))
            if len(out) >= MAX_MODULE_TENSORS:
                break
    return out
