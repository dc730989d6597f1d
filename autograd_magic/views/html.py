"""The static HTML view: what nbconvert, GitHub and a saved notebook show.

Every user string goes through `escape.html_text`; SVG comes from Graphviz through
`escape.safe_svg`. Colours use JupyterLab's CSS variables with
fallbacks, so the view reads in light and dark themes and outside Jupyter; the
graph's lines, borders and op boxes are recoloured with the theme (the light
leaf and output boxes keep dark text). Line numbers are the report's own
(the cell body's); `code` spans in messages become <code>.
"""

from __future__ import annotations

import re

from ..report.model import Graph, Report
from .escape import html_text as _e
from .escape import readable_dot
from .graph import LegendItem, Rendered, legend_for, render_torchviz, start_graphs
from .replay import replays_html
from .saved import memory_lines
from .text import format_values, graph_title, shape_text, summary_line
from .training import training_html

STYLE = """
<style>
.agm{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;color:var(--jp-ui-font-color1,#222);
 background:var(--jp-layout-color0,transparent);max-width:100%;overflow-x:auto}
.agm h4{margin:.7em 0 .3em;font-size:13px}
.agm table{border-collapse:collapse;margin:.2em 0}
.agm td,.agm th{border:1px solid var(--jp-border-color2,#ccc);padding:2px 6px;text-align:left;vertical-align:top}
.agm th{background:var(--jp-layout-color2,#f2f2f2)}
.agm code,.agm pre{font-family:var(--jp-code-font-family,monospace);font-size:12px}
.agm pre,.agm .msg{white-space:pre-wrap;margin:2px 0}
.agm .msg code{background:var(--jp-layout-color2,#f0f0f0);border-radius:3px;padding:0 2px}
.agm{--agm-error:#b00020;--agm-warn:#8a4b00;--agm-info:#00609b}
[data-jp-theme-light=false] .agm{--agm-error:#ff8a80;--agm-warn:#ffb74d;--agm-info:#81d4fa}
.agm .sev-error{color:var(--agm-error);font-weight:bold}
.agm .sev-warning{color:var(--agm-warn);font-weight:bold}
.agm .sev-note{color:var(--agm-info)}
.agm .graph{overflow:auto;max-height:640px;border:1px solid var(--jp-border-color2,#ddd);padding:4px;resize:vertical;
 background:var(--jp-layout-color1,#fcfcfc)}
.agm .graph svg{max-width:none;height:auto}
.agm .graph g.edge [stroke="black"],.agm .graph g.node [stroke="black"]{stroke:var(--jp-ui-font-color1,black)}
.agm .graph g.edge [fill="black"]{fill:var(--jp-ui-font-color1,black)}
.agm .graph g.agm-op [fill="white"],.agm .graph g.agm-cut [fill="white"]{fill:var(--jp-layout-color1,white)}
.agm .graph g.agm-op text,.agm .graph g.agm-cut text{fill:var(--jp-ui-font-color1,black)}
.agm .graph g.agm-nonfinite text{fill:#000}
.agm .graph g.agm-module>text{fill:var(--jp-ui-font-color2,#4d4d4d)}
.agm .graph g.edge text[fill="#cd0000"]{fill:var(--agm-error)}
.agm .graph g.edge [stroke="#cd0000"]{stroke:var(--agm-error)}
.agm .hint{color:var(--jp-ui-font-color2,#666);font-style:italic}
.agm .raised{color:var(--agm-error)}
.agm .legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0;padding:0;list-style:none;font-size:12px}
.agm .legend li{display:flex;align-items:center;gap:5px}
.agm .sw{display:inline-block;width:18px;height:11px;border-radius:3px;box-sizing:border-box}
.agm details>summary{cursor:pointer}
</style>
"""


def render_html(report: Report) -> str:
    return html_with_graphs(report, html_around_graphs(report))


def html_around_graphs(report: Report) -> tuple[list[str], list[str]]:
    """The static view's parts before and after its graphs, for a report: the
    widget builds them while Graphviz lays the graphs out."""
    before = [STYLE, '<div class="agm">', f"<b>{_e(summary_line(report))}</b>"]
    before += [f'<div class="hint">{_e(h)}</div>' for h in report.hints]
    before.append(error_html(report))
    before.append(diagnostics_html(report))
    after = [replays_html(report), variables_html(report), gradients_html(report), training_html(report.training),
             torchviz_html(report), "</div>"]
    return before, after


def html_with_graphs(report: Report, around: tuple[list[str], list[str]],
                     drawings: list[Rendered] | None = None) -> str:
    before, after = around
    return "\n".join(p for p in [*before, graphs_html(report, drawings), *after] if p)


def render_page(report: Report) -> str:
    """A standalone HTML document (``report.save('x.html')``)."""
    return ('<!doctype html><html><head><meta charset="utf-8"><title>autograd report</title></head>'
            f"<body>{render_html(report)}</body></html>")


def error_html(report: Report) -> str:
    if report.error is None:
        return ""
    e = report.error
    first = e.message.splitlines()[0] if e.message else ""
    return (f'<div class="raised">The cell raised <b>{_e(e.type)}</b> at line {_e(_line(e.line))}: '
            f"<code>{_e(first)}</code></div>")


def diagnostics_html(report: Report) -> str:
    if not report.diagnostics:
        return ""
    rows = "".join(
        f'<tr><td class="sev-{_e(d.severity)}">{_e(d.severity)}</td><td>{_e(d.kind)}</td><td>{_e(_line(d.line))}</td>'
        f'<td><code>{_e(d.code)}</code></td><td><div class="msg">{message_html(d.message)}</div></td></tr>'
        for d in report.diagnostics
    )
    return f"<h4>Diagnostics</h4><table>{_head('severity', 'kind', 'line', 'code', 'message')}{rows}</table>"


def message_html(message: str) -> str:
    """Escaped text with each `code` span as <code> (messages are written with Markdown code spans)."""
    return _CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", _e(message))


def graphs_html(report: Report, drawings: list[Rendered] | None = None) -> str:
    """The graphs, drawn now or, given ``drawings`` (one per graph), as drawn already."""
    if not report.graphs:
        return ""
    if drawings is None:  # every Graphviz run started before the first is read
        drawings = [drawn() for drawn in start_graphs(report)]
    parts = "".join(graph_html(g, i, d) for i, (g, d) in enumerate(zip(report.graphs, drawings, strict=True), 1))
    drawn_any = any(d.svg is not None for d in drawings)
    return parts + (legend_html(legend_for(report.graphs, report)) if drawn_any else "")


def graph_html(graph: Graph, index: int, drawn: Rendered) -> str:
    title = _e(graph_title(graph, index))
    if drawn.svg is not None:
        return (f'<h4>{title}</h4><div class="graph" role="img" aria-label="{title}">{drawn.svg}</div>'
                + memory_html(graph))
    return (f'<h4>{title}</h4><div class="hint">{_e(drawn.hint or "")}</div>'
            f"<details><summary>DOT source</summary><pre>{_e(readable_dot(drawn.dot))}</pre></details>"
            + memory_html(graph))


def memory_html(graph: Graph) -> str:
    """The "memory kept for backward" line under a drawing, its biggest holders as a list."""
    lines = memory_lines(graph)
    if not lines:
        return ""
    holders = "".join(f"<li>{message_html(line.strip())}</li>" for line in lines[1:])
    return f'<div class="memory">{message_html(lines[0])}{f"<ol>{holders}</ol>" if holders else ""}</div>'


def legend_html(items: list[LegendItem]) -> str:
    entries = "".join(
        f'<li><span class="sw" style="background:{item.fill or "transparent"};border:{item.border}"></span>'
        f"{_e(item.text)}</li>" for item in items)
    return f'<ul class="legend" aria-label="graph legend">{entries}</ul>'


def torchviz_html(report: Report) -> str:
    """torchviz's own drawing, when the capture made one (``--torchviz``)."""
    if not report.torchviz_dot:
        return ""
    drawn = render_torchviz(report.torchviz_dot)
    source = f"<pre>{_e(readable_dot(drawn.dot))}</pre>" if drawn.dot else ""
    body = (f'<div class="graph">{drawn.svg}</div>' if drawn.svg is not None else
            f'<div class="hint">{_e(drawn.hint or "")}</div>{source}')
    return f"<details><summary>torchviz's drawing (make_dot)</summary>{body}</details>"


def variables_html(report: Report) -> str:
    if not report.tensors:
        return ""
    head = _head("name", "shape", "dtype", "device", "requires_grad", "is_leaf", "grad_fn", "line")
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(str(v))}</td>" for v in (
            r.name, shape_text(r.shape), r.dtype + (" (numpy)" if r.kind == "ndarray" else ""), r.device,
            r.requires_grad, r.is_leaf, r.grad_fn or "—", _line(r.line))) + "</tr>"
        for r in report.tensors.values()
    )
    return f"<h4>Variables</h4><table>{head}{rows}</table>"


def gradients_html(report: Report) -> str:
    if not report.gradients:
        return ""
    rows = []
    for g in report.gradients.values():
        values = format_values(g.values, g.shape)
        if g.before is not None:
            values = f"{format_values(g.before, g.shape)} → {values}"
        kind = "intermediate" if g.source == "hook" else "leaf .grad"
        rows.append(f"<tr><td>{_e(g.name)}</td><td>{_e(shape_text(g.shape))}</td><td><code>{_e(values)}</code></td>"
                    f"<td>{g.norm:.4g}</td><td>{kind}</td></tr>")
    accumulated = any(g.before is not None for g in report.gradients.values())
    head = _head("name", "shape", "values (before → after)" if accumulated else "values", "norm", "from")
    return f"<h4>Gradients</h4><table>{head}{''.join(rows)}</table>"


def _head(*titles: str) -> str:
    return "<tr>" + "".join(f"<th>{title}</th>" for title in titles) + "</tr>"


_CODE_SPAN = re.compile(r"`([^`\n]+)`")




def _line(line: int | None) -> str:
    return "—" if line is None else str(line)
