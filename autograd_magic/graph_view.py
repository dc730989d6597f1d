"""Draw a report `Graph`: DOT text, rendered to SVG by Graphviz when one is found.

The renderer is a system ``dot`` when present, else the ``graphviz-pure``
executable that ``pip install`` brings (a static build of Graphviz's own
command line). With neither, callers get the DOT source and a one-line hint.
Colours follow torchviz: blue leaves that require grad, green outputs, orange
saved tensors; shapes and text repeat what colour says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .report import Diagnostic, Graph, Node

RENDER_TIMEOUT_S = 20
BIG_GRAPH = 60  # nodes past which layout effort is capped
_svg_cache: dict[str, str] = {}


@dataclass(frozen=True)
class Rendered:
    dot: str
    svg: str | None
    hint: str | None = None


def render_svg(graph: Graph, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...] = ()) -> Rendered:
    dot = to_dot(graph, diagnostics)
    return render_dot(dot)


def render_dot(dot: str) -> Rendered:
    cached = _svg_cache.get(dot)
    if cached is not None:
        return Rendered(dot, cached)
    command = find_renderer()
    if command is None:
        return Rendered(dot, None, "no Graphviz renderer found: `pip install graphviz-pure` (or install Graphviz) to draw graphs")
    try:
        done = subprocess.run([command, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=RENDER_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Rendered(dot, None, f"graph rendering failed ({type(error).__name__}); showing the DOT source")
    if done.returncode != 0:
        return Rendered(dot, None, f"graph rendering failed: {done.stderr.decode(errors='replace').strip()[:200]}")
    svg = _strip_prolog(done.stdout.decode(errors="replace"))
    if len(_svg_cache) > 64:
        _svg_cache.clear()
    _svg_cache[dot] = svg
    return Rendered(dot, svg)


def find_renderer() -> str | None:
    """A Graphviz ``dot``-compatible executable, or None (AUTOGRAD_MAGIC_DOT overrides)."""
    forced = os.environ.get("AUTOGRAD_MAGIC_DOT")
    if forced is not None:
        return forced if forced and (shutil.which(forced) or Path(forced).is_file()) else None
    for name in ("dot", "graphviz-pure"):
        found = shutil.which(name)
        if found:
            return found
    beside = Path(sys.executable).parent / "graphviz-pure"  # a kernel's PATH may lack the venv's bin
    return str(beside) if beside.is_file() else None


def to_dot(graph: Graph, diagnostics: list[Diagnostic] | tuple[Diagnostic, ...] = ()) -> str:
    flagged = {name for d in diagnostics if d.severity != "note" for name in d.names}
    lines = [
        "digraph autograd {",
        '  graph [rankdir=BT, fontname="Helvetica", fontsize=11, bgcolor="transparent", ranksep=0.35, nodesep=0.25'
        + (", mclimit=0.3, nslimit=1, nslimit1=1, searchsize=20" if len(graph.nodes) > BIG_GRAPH else "") + "];",
        '  node [shape=box, style="rounded,filled", fillcolor="white", fontname="Helvetica", fontsize=10, margin="0.08,0.04"];',
        '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.6];',
    ]
    for node in graph.nodes:
        lines.append(f"  n{node.id} [{_node_attrs(node, flagged)}];")
    for src, dst in graph.edges:
        style = ', style="dashed"' if src == dst else ""
        lines.append(f"  n{src} -> n{dst}{style};")
    for index, cut in enumerate(graph.cuts):
        target = f"cut{index}"
        lines.append(f'  {target} [id="cut{index}", label="{_esc(cut.target)}", shape=note, style="dashed", '
                     f'fillcolor="white", tooltip="{_esc(f"{cut.how} at line {cut.line}: {cut.code}")}"];')
        lines.append(f'  n{cut.source} -> {target} [style="dashed", color="red3", fontcolor="red3", arrowhead="tee", '
                     f'label="✂ {_esc(cut.how)} (line {cut.line})"];')
    lines.append("}")
    return "\n".join(lines)


def _node_attrs(node: Node, flagged: set[str]) -> str:
    parts = []
    if node.name:
        parts.append(node.name)
    parts.append(node.label + (f" ×{node.repeat}" if node.repeat > 1 else ""))
    if node.line is not None:
        parts.append(f"line {node.line}: {_clip(node.expr or node.code)}")
    if node.kind == "leaf":
        parts.append(f"leaf {_shape(node.shape)}")
    if node.grad_norm is not None:
        parts.append(f"grad ‖·‖={node.grad_norm:.3g}")
    if node.saved:
        parts.append("saved: " + _clip(", ".join(node.saved), 40))
    fill = {"leaf": "lightblue", "root": "darkolivegreen1"}.get(node.kind, "white")
    attrs = [f'id="n{node.id}"', f'label="{_esc(chr(10).join(parts))}"', f'fillcolor="{fill}"',
             f'tooltip="{_esc(_tooltip(node))}"']
    if node.saved:
        attrs.append('color="orange"')
    if node.kind == "root":
        attrs.append("peripheries=2")
    if node.name and any(n in flagged for n in node.name.split(", ")):
        attrs += ['penwidth=2.5', 'color="red3"']
    if node.repeat > 1:
        attrs.append('style="rounded,filled,bold"')
    return ", ".join(attrs)


def _tooltip(node: Node) -> str:
    bits = [f"{node.name or '(unnamed)'}: {node.label}", f"shape {_shape(node.shape)}"]
    if node.line is not None:
        bits.append(f"line {node.line}: {node.code}")
    if node.grad_norm is not None:
        bits.append(f"grad norm {node.grad_norm:.4g}")
    return "\n".join(bits)


def _esc(text: str) -> str:
    """Escape for a DOT double-quoted string; Graphviz escapes XML itself when writing SVG."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _clip(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")" if shape else "scalar"


def _strip_prolog(svg: str) -> str:
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg
