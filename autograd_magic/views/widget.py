"""The interactive view: one `Report` as an anywidget.

The frontend (``static/widget.js``) gets the report as one JSON trait and each
graph already drawn to SVG here (see `views.graph`) as another, so the browser
needs no Graphviz. The widget is built and sent while Graphviz lays the graphs
out; the drawings follow in one update, before the output is displayed.
Panels: Graph, Variables, Gradients, Diagnostics, Timeline (and
torchviz's drawing when the capture made one, and Training — gradient norms per
step, plotted — when the cell called backward repeatedly). Clicking a graph node writes
`AutogradView.selected`, so Python can react::

    view = AutogradView(report)
    view.observe(lambda change: print(view.selected_node), "selected")

The view opens on what matters (`opening`): the diagnostics, with the first
of the most severe expanded, when the cell has no graph or something is wrong;
else the graph. The output's mimebundle also carries the full static HTML and
text views, so a saved notebook, nbconvert and a terminal still show everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from itertools import islice
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .. import internal
from ..report.model import SEVERITIES, Node, Report, Step, flatten
from .escape import readable_dot
from .graph import Rendered, legend_for, render_torchviz, start_graphs
from .html import html_around_graphs, html_with_graphs
from .saved import kept_sentence, memory_lines, saved_items
from .text import graph_title, node_gradient, node_value, render_text, replay_title, step_lines, summary_line, unwatched

STATIC = Path(__file__).parent / "static"
Refold = Callable[[Mapping[int, tuple[frozenset[str], frozenset[str]]]], Report]  # folds -> the report again
MAX_VALUES = 12  # gradient values the widget lists (widget.js MAX_VALUES)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
TABS = ("graph", "variables", "gradients", "diagnostics", "timeline", "torchviz", "replay", "training")


class AutogradView(anywidget.AnyWidget):  # type: ignore[misc]
    """The widget for one report; the traits below are synced with the browser."""

    _esm = (STATIC / "widget.js").read_text(encoding="utf-8") + (STATIC / "replay.js").read_text(encoding="utf-8")
    _css = STATIC / "widget.css"

    report = traitlets.Dict(help="The report as JSON (Report.to_dict) plus the legend and each node's words.",
                            ).tag(sync=True)
    drawings: traitlets.List[dict[str, Any]] = traitlets.List(
        help="Each graph drawn: {title, svg} or, with no renderer, {title, dot, hint}.").tag(sync=True)
    selected = traitlets.Int(None, allow_none=True, help="Id of the selected graph node.").tag(sync=True)
    graph = traitlets.Int(0, help="Index of the graph on show.").tag(sync=True)
    diagnostic = traitlets.Int(None, allow_none=True, help="Index of the selected diagnostic.").tag(sync=True)
    step = traitlets.Int(0, help="Timeline position: ops with a larger sequence number are dimmed.").tag(sync=True)
    tab = traitlets.Enum(TABS, "graph", help="The panel on show.").tag(sync=True)
    replay_call = traitlets.Int(0, help="Backward replay: which recorded backward call.").tag(sync=True)
    replay_step = traitlets.Int(1, help="Backward replay: the step on show (from 1).").tag(sync=True)
    fold_request = traitlets.Dict(help="A click on a module: {graph, module, open}; answered by a new report.",
                                  ).tag(sync=True)

    def __init__(self, report: Report, refold: Refold | None = None, **kwargs: Any) -> None:
        self.source_report = report  # plain data, no tensors: safe to keep; the payload, text and HTML draw it
        self._refold = refold
        self._folds: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
        kwargs.setdefault("step", report.ops[-1].seq if report.ops else 0)
        tab, diagnostic = opening(report)
        kwargs.setdefault("tab", tab)
        kwargs.setdefault("diagnostic", diagnostic)
        started = start_graphs(self.source_report)  # Graphviz lays the graphs out while the rest is built and sent
        try:
            super().__init__(report=_data(self.source_report), **kwargs)
            self._static = _StaticBundle(self.source_report)
        finally:  # every process is read to its end, even when building the rest failed
            drawn = [finish() for finish in started]
        self._static.drawings = drawn  # the bundle's HTML shows these: a failed run is not run again
        self.drawings = _drawings(self.source_report, drawn)

    @traitlets.observe("fold_request")
    def _fold(self, change: dict[str, Any]) -> None:
        """Unfold (``open``) or fold one module of one graph: the report is built again with the modules
        every click so far opened or closed, and sent whole (the drawing's layout changes with it)."""
        request = change["new"]
        if self._refold is None or not isinstance(request.get("module"), str):
            return
        index = request.get("graph", 0)
        if not isinstance(index, int):
            return
        opened, closed = self._folds.get(index, (frozenset(), frozenset()))
        name = request["module"]
        if request.get("open"):
            opened, closed = opened | {name}, closed - {name}
        else:
            opened, closed = opened - {name}, closed | {name}
        self._folds[index] = (opened, closed)
        try:
            report = self._refold(dict(self._folds))
        except Exception:
            internal.report_failure("folding a module")
            return
        self.source_report = report
        self.selected = None  # node ids are numbered afresh in the new drawing
        data = payload(self.source_report)
        with self.hold_sync():  # one message: the frontend draws the new report once
            self.drawings = data.pop("drawings")
            self.report = data

    @property
    def selected_node(self) -> Node | None:
        """The selected `Node`, looked up in the graph on show first."""
        graphs = self.source_report.graphs
        ordered = graphs[self.graph:self.graph + 1] + graphs
        return next((n for g in ordered for n in g.nodes if n.id == self.selected), None)

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        # ipywidgets cuts text/plain to 110 characters: give the full text and HTML for every other frontend
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        if self._static.report is not self.source_report:  # folded since: the static views follow
            self._static = _StaticBundle(self.source_report)
        data = {**data, "text/plain": self._static.text, "text/html": self._static.html()}
        return data, metadata


class _StaticBundle:
    """The widget output's text and HTML views, built while Graphviz draws (the graphs go in last)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.text = render_text(report)
        self._around = html_around_graphs(report)
        self.drawings: list[Rendered] | None = None  # None: from Graphviz's cache (a fold's were just drawn)

    def html(self) -> str:
        return html_with_graphs(self.report, self._around, self.drawings)


def opening(report: Report) -> tuple[str, int | None]:
    """The tab to open on and the diagnostic to expand: the findings when there is no graph or a
    warning/error, the first of the most severe expanded; otherwise the graph."""
    if not report.diagnostics:
        return "graph", None
    rank = {severity: i for i, severity in enumerate(SEVERITIES)}
    first = min(range(len(report.diagnostics)), key=lambda i: (rank.get(report.diagnostics[i].severity, 9), i))
    wrong = report.diagnostics[first].severity in ("error", "warning")
    return ("diagnostics", first) if wrong or not report.graphs else ("graph", None)


def payload(report: Report) -> dict[str, Any]:
    """What the frontend draws: the report's JSON, each graph's SVG (or DOT and
    a hint) as ``drawings``, the legend, and per node its gradient and saved tensors in words. The widget
    sends ``drawings`` as a trait of its own, after the rest: see `AutogradView.__init__`."""
    started = start_graphs(report)  # Graphviz draws while the rest is built
    try:
        data = _data(report)
    finally:  # every process is read to its end, even when building the rest failed
        drawn = [finish() for finish in started]
    data["drawings"] = _drawings(report, drawn)
    return data


def _drawings(report: Report, drawn: list[Rendered]) -> list[dict[str, Any]]:
    return transportable([_drawing(d, graph_title(g, i))
                          for i, (g, d) in enumerate(zip(report.graphs, drawn, strict=True), 1)])


def _data(report: Report) -> dict[str, Any]:
    """The report's JSON with each node's and replay step's words, as the panels read them, and the
    legend; not the graphs' drawings (`payload` has them too)."""
    # the replay steps as the panel reads them replace the full records: not serialised only to be dropped
    # (two replays of a transformer's backward were half of the report's serialising)
    data = replace(report, backward_steps=[replace(r, steps=()) for r in report.backward_steps]).to_dict()
    data["legend"] = [asdict(item) for item in legend_for(report.graphs, report)]
    data["torchviz"] = _drawing(render_torchviz(report.torchviz_dot), "torchviz") if report.torchviz_dot else None
    for graph, graph_data in zip(report.graphs, data["graphs"], strict=True):
        graph_data["memory_text"] = memory_lines(graph)
        for node, node_data in zip(graph.nodes, graph_data["nodes"], strict=True):
            node_data["kept_text"] = kept_sentence(node)
            node_data["grad_text"] = node_gradient(node, report.gradients)
            node_data["value_text"] = node_value(node).removeprefix("value ").removeprefix("= ")
            node_data["saved_text"] = saved_items(node.saved)
    for index, (replay, replay_data) in enumerate(zip(report.backward_steps, data["backward_steps"], strict=True), 1):
        replay_data["title"] = replay_title(replay, index)
        replay_data["steps"] = [_replay_step(step) for step in replay.steps]
    data["summary"] = summary_line(report)
    data["unwatched_text"] = unwatched(report) if report.ops_unwatched_steps else ""
    data.pop("torchviz_dot", None)  # drawn apart; the source would only double the size
    data.pop("gradients", None)  # the same values as gradient_details, which the panels read
    for row in data["gradient_details"].values():  # the panel lists the first MAX_VALUES ("…" after)
        row["values"], row["before"] = _first(row["values"]), _first(row["before"])
    return transportable(data)


def transportable(data: Any) -> Any:
    """``data`` with every lone surrogate (a class may be named one) as U+FFFD: Jupyter sends messages as
    UTF-8, which has no lone surrogates, and one in a name would lose the whole widget. The panels show
    text with ``textContent``, so nothing else in a string needs escaping."""
    return _replace_surrogates(data) if _LONE_SURROGATE.search(json.dumps(data, ensure_ascii=False)) else data


def _replace_surrogates(data: Any) -> Any:
    if isinstance(data, str):
        return _LONE_SURROGATE.sub("\ufffd", data)
    if isinstance(data, dict):
        return {_replace_surrogates(key): _replace_surrogates(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_replace_surrogates(value) for value in data]
    return data


def _first(values: Any) -> Any:
    """The first `MAX_VALUES` + 1 of nested lists, flattened: what the Gradients panel can show."""
    return list(islice(flatten(values), MAX_VALUES + 1)) if isinstance(values, list) else values


def _replay_step(step: Step) -> dict[str, Any]:
    """What the replay panel shows of a step: its words (``lines``, made here from the full record) and
    where it sits in the drawing. The structured values stay in `Report.to_dict`; sent along, they
    tripled a transformer's payload."""
    return {"number": step.number, "label": step.label, "node": step.node,
            "sent": [{"node": flow.node} for flow in step.sent], "lines": step_lines(step)}


def _drawing(rendered: Rendered, title: str) -> dict[str, Any]:
    if rendered.svg is not None:
        return {"title": title, "svg": rendered.svg, "dot": None, "hint": None}
    return {"title": title, "svg": None, "dot": readable_dot(rendered.dot), "hint": rendered.hint}
