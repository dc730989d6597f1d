"""Which ``nn.Module`` an op ran in: its qualified name (``encoder.layers.3.self_attn``), without module hooks.

Global module hooks would change what the user's program does (hook counts, ``_forward_hooks``
order, compile guards). Instead, when an op is recorded in detail, we look up the stack for
the innermost ``forward`` frame whose ``self`` is a module, and name it from the namespace's
modules (``named_modules()`` of each module a variable holds: a global, or a local of a user function
running, like a script's ``main()``), read quietly and guarded, and refreshed only when they hold a
module we have not named yet.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import torch

from .. import internal
from .frames import user_locals
from .reads import quiet

MAX_MODULES = 5000  # named per cell: far more than any model a graph can show
_IGNORED = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


class ModuleNames:
    """id(module) -> (weak ref, qualified name, class name) for the modules a namespace holds."""

    def __init__(self, namespace: dict[str, Any], is_user_code: Callable[[CodeType], bool]) -> None:
        self._namespace = namespace
        self._is_user_code = is_user_code
        self._names: dict[int, tuple[weakref.ref[torch.nn.Module], str, str]] = {}
        self._holders: frozenset[int] = frozenset()  # ids of the modules the namespace held at the last scan
        self._classes: dict[str, str] = {}  # every name given: a module of main()'s locals is gone by the end

    def module_of(self, frame: FrameType | None) -> str | None:
        """The qualified name of the innermost named module whose ``forward`` is running, else None."""
        while frame is not None and not self._is_user_code(frame.f_code):
            if frame.f_code.co_name == "forward":
                owner = frame.f_locals.get("self")
                if isinstance(owner, torch.nn.Module):
                    name = self.name_of(owner, frame)
                    if name is not None:
                        return name
            frame = frame.f_back
        return None

    def name_of(self, module: torch.nn.Module, frame: FrameType | None = None) -> str | None:
        """Its qualified name; on a miss, name the modules held again (also by the user frames above ``frame``)."""
        entry = self._names.get(id(module))
        if (entry is None or entry[0]() is not module) and self._rescan(frame):
            entry = self._names.get(id(module))
        return entry[1] if entry is not None and entry[0]() is module else None

    def classes(self) -> dict[str, str]:
        """qualified name -> class name, for every module named in the cell."""
        return dict(self._classes)

    def _rescan(self, frame: FrameType | None) -> bool:
        """Name the modules held again when there are new ones; True when it did."""
        try:
            with quiet():
                scope = {**self._namespace, **user_locals(frame, self._is_user_code, self._namespace)}  # globals first
                holders = {name: value for name, value in scope.items()
                           if isinstance(value, torch.nn.Module) and not name.startswith("_") and name not in _IGNORED}
                del scope  # nothing of the frames' is kept
                ids = frozenset(id(v) for v in holders.values())
                if ids == self._holders:
                    return False
                self._holders = ids
                for name, value in holders.items():
                    self._name_all(name, value)
                return True
        except Exception:
            internal.report_failure("naming the namespace's modules")
            return False

    def _name_all(self, name: str, root: torch.nn.Module) -> None:
        for qualified, module in root.named_modules(prefix=name):
            if len(self._names) >= MAX_MODULES:
                return
            entry = self._names.get(id(module))
            if entry is None or entry[0]() is not module:  # first name wins: `model.0`, not a later alias `layer`
                self._names[id(module)] = (weakref.ref(module), qualified, type(module).__name__)
                self._classes.setdefault(qualified, type(module).__name__)

    def clear(self) -> None:
        self._names.clear()
        self._classes.clear()
