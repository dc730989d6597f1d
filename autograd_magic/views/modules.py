"""Modules drawn as Graphviz clusters: each nn.Module a box around the nodes its forward made,
nested as the modules are (``subgraph cluster_...``), labelled with its name and class."""

from __future__ import annotations

from collections.abc import Iterable

from ..report.model import ModuleRow
from .escape import dot_string


def cluster_lines(modules: Iterable[ModuleRow]) -> list[str]:
    """DOT lines nesting one cluster per module; nodes are declared elsewhere and only named here."""
    rows = list(modules)
    children: dict[str | None, list[ModuleRow]] = {}
    for row in rows:
        children.setdefault(row.parent, []).append(row)
    out: list[str] = []
    position = {row.name: index for index, row in enumerate(rows)}
    for index, row in enumerate(children.get(None, [])):
        out.extend(_cluster(row, children, f"{index}", "  ", position))
    return out


def _cluster(row: ModuleRow, children: dict[str | None, list[ModuleRow]], key: str, indent: str,
             position: dict[str, int]) -> list[str]:
    """The cluster's SVG id is ``m<i>``, ``i`` its row in ``Graph.modules``: the widget folds it on click."""
    text = f"{row.label} ({row.cls}) ×{row.repeat}" if row.repeat > 1 else f"{row.name} ({row.cls})"
    lines = [f'{indent}subgraph "cluster_m{key}" {{',
             f'{indent}  graph [label={dot_string(_clip(text))}, id="m{position[row.name]}", class="agm-module", '
             f'style="rounded,dashed", color="gray50", fontcolor="gray30", fontsize=10, labeljust="l"];']
    lines += [f"{indent}  n{nid};" for nid in row.nodes]
    for index, child in enumerate(children.get(row.name, [])):
        lines.extend(_cluster(child, children, f"{key}_{index}", indent + "  ", position))
    lines.append(f"{indent}}}")
    return lines


def _clip(text: str, width: int = 80) -> str:
    """A module's label on one line, as long as a wide box's title (node labels clip the same way)."""
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
