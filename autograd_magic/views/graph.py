"""Draw a report `Graph`: DOT text, rendered to SVG by Graphviz when one is found.

Why Graphviz in Python rather than in the browser: the SVG then lands in the
output's static ``text/html`` too, so saved notebooks, nbconvert and GitHub
show the graph with no JavaScript, and the widget needs no WebAssembly bundle.
The renderer is a system ``dot`` when present, else the ``graphviz-pure``
executable that ``pip install`` brings (a static build of Graphviz's own
command line, a few milliseconds for small graphs). With neither, callers get
the DOT source and a one-line hint; rendering never raises.

Colours follow torchviz (blue leaves that require grad, green outputs, dark
green dotted view bases); shapes, borders and text repeat what colour says.
What a node saved for backward is a sentence in its tooltip and details, with an
orange border as the only mark, so a small graph is not half saved-tensor boxes.
Node ``id`` attributes (``n<id>``) and ``agm-<kind>`` classes survive into the
SVG so the widget can find nodes and themes can recolour them. Every string goes into
DOT through `escape.dot_string`, and what Graphviz returns is made safe before any view
sees it (`escape.safe_svg`). Graphviz sizes boxes with its own font metrics, so
lines that a browser's wider fallback font would push past their box are
squeezed to fit (`fit_labels`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..report.model import Cut, GradRow, Graph, Node, Report
from .escape import dot_string, requote_dot, safe_svg
from .fit import fit_labels
from .modules import cluster_lines
from .saved import kept_sentence, saved_sentence
from .text import format_values, module_facts, node_gradient, node_value, shape_text

RENDER_TIMEOUT_S = 20
BIG_GRAPH = 60  # nodes past which layout effort is capped
NONFINITE_FILL = {True: "#ffc8c8", False: "#ffe9e9"}  # where nan/inf started, and the nodes that carry it
FILL = {"leaf": "lightblue", "root": "darkolivegreen1", "base": "darkolivegreen3", "op": "white", "module": "lavender"}
_TITLE_BEFORE_TOOLTIP = re.compile(r'<title>[^<]*</title>(\n<g id="a_[^"]*"><a xlink:title="([^"]*)")')
_ID_TITLE = re.compile(r"<title>(?:autograd|[a-z]+\d+(?:_\d+)?(?:&#45;&gt;[a-z]+\d+(?:_\d+)?)?)</title>\n?")
_MONOSPACE = re.compile(r'fontname="?monospace"?')  # torchviz's font: graphviz-pure measures it as Times and clips
NO_RENDERER = "no Graphviz renderer found: `pip install graphviz-pure` (or install Graphviz) to draw graphs"
_svg_cache: dict[str, str] = {}
_last_dots: dict[str, tuple[weakref.ref[Report], list[int], list[str]]] = {}  # see _dots_of


@dataclass(frozen=True)
class Rendered:
    dot: str
    svg: str | None
    hint: str | None = None


@dataclass(frozen=True)
class LegendItem:
    key: str
    fill: str  # CSS colour of the swatch ("" for none)
    border: str  # CSS border of the swatch: the non-colour cue
    text: str


LEGEND = (
    LegendItem("leaf", "#add8e6", "1px solid currentColor", "leaf that requires grad (AccumulateGrad)"),
    LegendItem("root", "#caff70", "3px double currentColor", "output: where backward starts"),
    LegendItem("op", "#ffffff", "1px solid currentColor", "backward function (grad_fn) with its line"),
    LegendItem("saved", "", "2px solid #ffa500", "keeps tensors for backward (hover or click it to see which)"),
    LegendItem("base", "#a2cd5a", "1px dotted currentColor", "base of a view"),
    LegendItem("flagged", "#ffffff", "3px solid #cd0000", "⚠ involved in a diagnostic"),
    LegendItem("nonfinite", "#ffc8c8", "3px solid #cd0000", "⚠ nan/inf started here (tinted: nodes that carry it)"),
    LegendItem("folded", "#ffffff", "2px solid currentColor", "×N: a repeated op drawn once"),
    LegendItem("module", "#e6e6fa", "1px solid currentColor",
               "an nn.Module folded into one node (live view: click to unfold)"),
    LegendItem("cut", "", "1px dashed #cd0000", "✂ the graph is cut here (detach, numpy, item, ...)"),
)


@dataclass(frozen=True)
class Facts:
    """What the report knows about named tensors beyond the graph: for tooltips and highlights."""

    flagged: frozenset[str] = frozenset()
    dtypes: Mapping[str, str] = field(default_factory=dict)
    grads: Mapping[str, str] = field(default_factory=dict)
    gradients: Mapping[str, GradRow] = field(default_factory=dict)


def facts_of(report: Report | None) -> Facts:
    """What a drawing says about a report's tensors beside the graph itself."""
    if report is None:
        return Facts()
    flagged = frozenset(n for d in report.diagnostics if d.severity != "note" for n in d.names)
    dtypes = {name: f"{row.dtype} on {row.device}" for name, row in report.tensors.items()}
    grads = {name: f"{format_values(row.values, row.shape)} (norm {row.norm:.4g})"
             for name, row in report.gradients.items()}
    return Facts(flagged, dtypes, grads, report.gradients)


def render_graph(graph: Graph, report: Report | None = None) -> Rendered:
    """Draw one graph of ``report``."""
    return render_dot(to_dot(graph, facts_of(report)))


def start_graphs(report: Report) -> list[Callable[[], Rendered]]:
    """Start drawing every graph of a report; each call returns one drawing when it is done.

    Graphviz runs while the caller builds the rest of the view: starting its process is most of its time.
    """
    return [start_render(dot) for dot in _dots_of(report)]


def _dots_of(report: Report) -> list[str]:
    """Each graph's DOT text; the last report's are reused: the widget's payload and its static HTML
    draw the same report one after the other, and a big graph's DOT takes milliseconds."""
    last = _last_dots.get("report")
    graphs = [id(g) for g in report.graphs]
    if last is not None and last[0]() is report and last[1] == graphs:
        return last[2]
    facts = facts_of(report)
    dots = [to_dot(graph, facts) for graph in report.graphs]
    _last_dots["report"] = (weakref.ref(report), graphs, dots)
    return dots


def render_first_graph(report: Report) -> Rendered:
    return render_graph(report.graphs[0], report)


def render_dot(dot: str) -> Rendered:
    """SVG for DOT text (cached by the text), or the reason there is none."""
    return start_render(dot)()


def start_render(dot: str) -> Callable[[], Rendered]:
    """Start Graphviz on DOT text now; the returned call waits for it and gives the drawing."""
    cached = _svg_cache.get(dot)
    if cached is not None:
        return lambda: Rendered(dot, cached)
    command = find_renderer()
    if command is None:
        return lambda: Rendered(dot, None, NO_RENDERER)
    try:
        process = subprocess.Popen([command, "-Tsvg"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
    except OSError as error:
        failed = Rendered(dot, None, f"graph rendering failed ({type(error).__name__}); showing the DOT source")
        return lambda: failed
    rest = _write_what_fits(process, dot.encode())
    writer = None
    if rest:  # a big graph: the rest from a thread, as Graphviz reads
        writer = threading.Thread(target=_write_all, args=(process, rest), name="autograd_magic DOT", daemon=True)
        writer.start()
    else:
        _write_all(process, b"")  # closed: Graphviz has its whole input and lays it out meanwhile
    return lambda: _finish_render(dot, process, writer)


def _write_what_fits(process: subprocess.Popen[bytes], data: bytes) -> bytes:
    """Write as much DOT as the pipe takes without waiting (all of it, up to 64 KiB on Linux); the rest."""
    assert process.stdin is not None
    fd = process.stdin.fileno()
    try:
        os.set_blocking(fd, False)
    except (OSError, AttributeError):  # no non-blocking pipes here (Windows before 3.12): the thread writes it all
        return data
    try:
        written = os.write(fd, data)
    except BlockingIOError:
        written = 0
    except OSError:  # Graphviz exited early: its stderr says why
        written = len(data)
    finally:
        os.set_blocking(fd, True)
    return data[written:]


def _write_all(process: subprocess.Popen[bytes], data: bytes) -> None:
    stdin = process.stdin
    if stdin is None:
        return
    try:
        if data:
            stdin.write(data)
        stdin.close()
    except (OSError, ValueError):  # Graphviz exited early (its stderr says why), or was killed
        pass


def _finish_render(dot: str, process: subprocess.Popen[bytes], writer: threading.Thread | None) -> Rendered:
    try:
        if writer is not None:
            writer.join(RENDER_TIMEOUT_S)
            if writer.is_alive():
                raise subprocess.TimeoutExpired(process.args, RENDER_TIMEOUT_S)
        process.stdin = None  # written and closed: communicate() only reads
        out, err = process.communicate(timeout=RENDER_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        process.kill()  # a writer still blocked on the pipe fails now, and ends
        process.stdin = None
        process.communicate()
        return Rendered(dot, None, f"graph rendering failed ({type(error).__name__}); showing the DOT source")
    if process.returncode != 0 or b"<svg" not in out:
        return Rendered(dot, None, f"graph rendering failed: {err.decode(errors='replace').strip()[:200]}")
    svg = safe_svg(fit_labels(_tidy_titles(_strip_prolog(out.decode(errors="replace")))))
    if svg is None:
        return Rendered(dot, None, "graph rendering failed: Graphviz's SVG was not well-formed; showing the DOT source")
    if len(_svg_cache) > 64:
        _svg_cache.clear()
    _svg_cache[dot] = svg
    return Rendered(dot, svg)


def render_torchviz(source: str) -> Rendered:
    """torchviz's own DOT (``--torchviz``), or the note capture left when it could not make one."""
    if not source.lstrip().startswith(("digraph", "strict", "graph")):
        return Rendered("", None, source.strip().lstrip("#").strip() or "torchviz made no drawing")
    return render_dot(_MONOSPACE.sub("fontname=Courier", requote_dot(source)))  # see _MONOSPACE


def find_renderer() -> str | None:
    """A Graphviz ``dot``-compatible executable, or None (AUTOGRAD_MAGIC_DOT overrides; "" means none)."""
    forced = os.environ.get("AUTOGRAD_MAGIC_DOT")
    if forced is not None:
        return forced if forced and (shutil.which(forced) or Path(forced).is_file()) else None
    for name in ("dot", "graphviz-pure"):
        found = shutil.which(name)
        if found:
            return found
    beside = Path(sys.executable).parent / "graphviz-pure"  # a kernel's PATH may lack the venv's bin
    return str(beside) if beside.is_file() else None


def to_dot(graph: Graph, facts: Facts = Facts()) -> str:  # noqa: B008 - Facts is frozen
    big = len(graph.nodes) > BIG_GRAPH
    limits = ", mclimit=0.3, nslimit=1, nslimit1=1, searchsize=20" if big else ""  # 20-35x faster layout
    lines = [
        "digraph autograd {",
        '  graph [rankdir=BT, fontname="Helvetica", fontsize=11, bgcolor="transparent", ranksep=0.35, '
        f"nodesep=0.25{limits}];",
        '  node [shape=box, style="rounded,filled", fillcolor="white", fontname="Helvetica", fontsize=10, '
        'margin="0.14,0.04"];',
        '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.6];',
    ]
    for node in graph.nodes:
        lines.append(f"  n{node.id} [{_attrs(node_attrs(node, facts))}];")
    bases = {n.id for n in graph.nodes if n.kind == "base"}
    for src, dst in graph.edges:
        dotted = ', style="dotted"' if src in bases else ""
        loop = ', style="dashed", tooltip="repeated"' if src == dst else ""
        lines.append(f'  n{src} -> n{dst} [id="e{src}_{dst}"{dotted}{loop}];')
    lines.extend(_cut_lines(graph.cuts, {n.id for n in graph.nodes}))
    lines.extend(cluster_lines(graph.modules))
    lines.append("}")
    return "\n".join(lines)


def where(node: Node) -> str:
    """`line 3`, or `In [19] line 3` for a node an earlier cell made."""
    return f"In [{node.cell}] line {node.line}" if node.cell is not None else f"line {node.line}"


def node_attrs(node: Node, facts: Facts) -> dict[str, str]:
    flagged = bool(node.name) and any(n in facts.flagged for n in _names(node))
    attrs = {
        "id": f"n{node.id}",
        "class": f"agm-{node.kind}",
        "label": "\n".join(_label_parts(node, flagged, facts)),
        "fillcolor": FILL.get(node.kind, "white"),
        "tooltip": "\n".join(tooltip_lines(node, facts)),
    }
    if node.saved:
        attrs["color"] = "orange"
    if node.kind == "root":
        attrs["peripheries"] = "2"
    if node.kind == "base":
        attrs["style"] = "rounded,filled,dotted"
    if node.repeat > 1:
        attrs["style"] = "rounded,filled,bold"
    if flagged:
        attrs.update(penwidth="2.5", color="red3")
    if node.nonfinite:
        origin = node.nonfinite != "carried"
        attrs.update(fillcolor=NONFINITE_FILL[origin], color="red3", penwidth="3" if origin else "1.5")
        attrs["class"] += " agm-nonfinite"  # keeps its text dark on the pink fill in a dark theme
    return attrs


def _label_parts(node: Node, flagged: bool, facts: Facts) -> list[str]:
    parts = [f"⚠ {node.nonfinite}"] if node.nonfinite not in ("", "carried") else []
    if node.name:
        parts.append(("⚠ " if flagged else "") + _clip(node.name, 40))
    if node.kind == "module":  # what it is; the line that called the model is every layer's
        what = module_facts(node)
        out = what.pop() if node.dtype else None  # its own line; class and parameters share the first
        lines = [_clip(" · ".join(what), 48), *([out] if out else [])]
        return [*parts, *lines, "folded module" if node.repeat == 1 else "folded blocks"]
    parts.append(_clip(node.label, 40) + (f" ×{node.repeat}" if node.repeat > 1 else ""))
    if node.line is not None:
        parts.append(f"{where(node)}: {_clip(node.expr or node.code)}")
    if node.kind == "leaf":
        parts.append(f"leaf {shape_text(node.shape)}")
    value = node_value(node) if node.repeat == 1 else ""  # a folded box stands for many values
    if value:
        parts.append(_clip(value, 40))
    grad = node_gradient(node, dict(facts.gradients))
    if grad:
        parts.append(grad)
    return parts


def tooltip_lines(node: Node, facts: Facts) -> list[str]:
    """Hover text: name and class, shape, dtype, line and code, gradient."""
    first = _names(node)[0] if node.name else ""
    bits = [f"{node.name or '(unnamed)'}: {node.label}" + (f" ×{node.repeat}" if node.repeat > 1 else ""),
            f"shape {shape_text(node.shape)}" + (f", {facts.dtypes[first]}" if first in facts.dtypes else "")]
    if node.kind == "module":
        bits[:2] = [f"{node.name}: folded module {', '.join(module_facts(node))}"]
    if node.line is not None:
        bits.append(("called at " if node.kind == "module" else "") + f"{where(node)}: {node.code}")
    if node.value is not None and node.repeat == 1:
        bits.append(node_value(node))
    if first in facts.grads:
        bits.append(f"grad {facts.grads[first]}")
    elif node.grad is not None or node.grad_norm is not None:
        bits.append(node_gradient(node, dict(facts.gradients)).replace(" = ", " ", 1))
    if node.saved:
        bits.append(saved_sentence(node.saved))
    if node.nonfinite:
        bits.append(f"⚠ {node.nonfinite} started here" if node.nonfinite != "carried" else "carries that nan/inf")
    kept = kept_sentence(node)
    if kept:
        bits.append(kept)
    return bits


def _cut_lines(cuts: Iterable[Cut], ids: set[int]) -> list[str]:
    """Cuts are broken edges: dashed, red, ending in a bar, labelled ✂ with the line."""
    out = []
    seen: set[tuple[int | None, str, int | None, str]] = set()
    for index, cut in enumerate(cuts):
        key = (cut.source, cut.how, cut.line, cut.target)
        if cut.source not in ids or key in seen:  # e.g. one optimizer step touches a parameter several times
            continue
        seen.add(key)
        where = f"line {cut.line}" if cut.line is not None else "this cell"
        box = {"id": f"cut{index}", "class": "agm-cut", "label": f"{_clip(cut.target, 40)}\n({where})", "shape": "note",
               "style": "dashed", "fillcolor": "white", "tooltip": f"{cut.how} at {where}: {cut.code}"}
        edge = {"id": f"cutedge{index}", "style": "dashed", "color": "red3", "fontcolor": "red3", "arrowhead": "tee",
                "label": f"✂ {cut.how} ({where})", "tooltip": f"graph cut: {cut.how} at {where}: {cut.code}"}
        out.append(f"  cut{index} [{_attrs(box)}];")
        out.append(f"  n{cut.source} -> cut{index} [{_attrs(edge)}];")
    return out


def legend_for(graphs: Iterable[Graph], report: Report | None = None) -> list[LegendItem]:
    """The legend entries these graphs use, in `LEGEND` order."""
    flagged = facts_of(report).flagged
    used = {"op"}
    for graph in graphs:
        used.update(n.kind for n in graph.nodes)
        used.update(key for key, present in (
            ("saved", any(n.saved for n in graph.nodes)),
            ("folded", any(n.repeat > 1 for n in graph.nodes)),
            ("cut", bool(graph.cuts)),
            ("nonfinite", any(n.nonfinite for n in graph.nodes)),
            ("flagged", any(set(_names(n)) & flagged for n in graph.nodes if n.name)),
        ) if present)
    return [item for item in LEGEND if item.key in used]


def _names(node: Node) -> list[str]:
    return (node.name or "").split(", ")


def _attrs(attrs: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={dot_string(value)}" for key, value in attrs.items())


def _clip(text: str, width: int = 34) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _tidy_titles(svg: str) -> str:
    """Browsers show an element's <title> on hover: make it the tooltip, never our internal ids."""
    svg = _TITLE_BEFORE_TOOLTIP.sub(lambda m: f"<title>{m.group(2)}</title>{m.group(1)}", svg)
    return _ID_TITLE.sub("", svg)


def _strip_prolog(svg: str) -> str:
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg
