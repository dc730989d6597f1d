"""Give tensors the user's own names, from the bindings capture saw.

A name rebound during the cell (``b = f(b)``) keeps both versions apart: the
latest is ``b``, an earlier one ``b (line 3)`` (the line that bound it).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field

from ..trace.events import Binding, Trace
from ..trace.names import all_nodes


@dataclass
class Names:
    """tid -> names, and the reverse, for one trace."""

    by_tid: dict[int, list[str]] = field(default_factory=dict)  # plain names first, in binding order
    tid_of: dict[str, int] = field(default_factory=dict)  # display name -> tid
    line_of: dict[str, int | None] = field(default_factory=dict)  # display name -> line that bound it
    qualified: set[str] = field(default_factory=set)

    def label(self, tid: int | None) -> str | None:
        """The name to show for a tensor: 'x', 'x, z' for aliases, None if unnamed."""
        names = self.by_tid.get(tid, []) if tid is not None else []
        plain = [n for n in names if n not in self.qualified]
        shown = plain or names
        return ", ".join(shown[:3]) if shown else None

    def all(self, tid: int | None) -> list[str]:
        return list(self.by_tid.get(tid, [])) if tid is not None else []

    def plain(self, tid: int | None) -> list[str]:
        return [n for n in self.all(tid) if n not in self.qualified]


def name_tensors(trace: Trace) -> Names:
    names = Names()
    history: dict[str, list[Binding]] = defaultdict(list)
    for binding in sorted(trace.bindings, key=lambda b: b.seq):
        versions = history[binding.name]
        if not versions or versions[-1].tid != binding.tid:
            versions.append(binding)
        if binding.qualified:
            names.qualified.add(binding.name)
    for name, versions in history.items():
        for index, binding in enumerate(versions):
            latest = index == len(versions) - 1
            shown = name if latest else _older(name, binding, versions)
            if binding.tid in names.by_tid and shown in names.by_tid[binding.tid]:
                continue
            names.by_tid.setdefault(binding.tid, []).append(shown)
            names.tid_of[shown] = binding.tid
            names.line_of[shown] = binding.line
            if binding.qualified:
                names.qualified.add(shown)
    assigned = assignment_lines(trace.source)
    for name, line in names.line_of.items():  # `z = x` runs no torch op: find its line in the source
        if line is None and name in assigned:
            names.line_of[name] = assigned[name]
    for listed in names.by_tid.values():  # plain names before versioned and qualified ones
        listed.sort(key=lambda n: (" (" in n, n in names.qualified))
    return names


def _older(name: str, binding: Binding, versions: list[Binding]) -> str:
    """How an earlier version of a rebound name reads: `b (line 3)`, `b (before this cell)`."""
    if binding.line is not None:
        return f"{name} (line {binding.line})"
    return f"{name} (before this cell)" if binding.seq == 0 else f"{name} (version {versions.index(binding) + 1})"


def assignment_lines(source: str) -> dict[str, int]:
    """name -> line of the last statement that assigns it (in source order)."""
    lines: dict[str, int] = {}
    for node in all_nodes(source):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            lines[node.id] = max(node.lineno, lines.get(node.id, 0))
    return lines
