"""Choose and produce the view of a report: widget, static HTML, or text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import internal
from ..report.model import Report
from .text import render_text


def mimebundle(report: Report) -> dict[str, str]:
    """text/plain always; text/html too (tables and, when a renderer exists, the graph)."""
    from .html import render_html

    return {"text/plain": render_text(report), "text/html": render_html(report)}


def show_report(report: Report, *, view: str = "auto", shell: Any = None, torchviz: bool = False,
                refold: Callable[..., Report] | None = None) -> None:
    """Display the report: the widget in a kernel, else its HTML/text bundle.

    ``torchviz`` needs nothing here: the views draw `Report.torchviz_dot`
    whenever the capture filled it. ``refold`` builds the report again with other modules
    folded: the widget calls it when a module is clicked.
    """
    from IPython.display import display

    if view == "text":
        print(render_text(report))
        return
    if view in ("auto", "widget") and _widgets_wanted(shell, view):
        widget = _make_widget(report, refold)
        if widget is not None:
            display(widget)
            return
    display(report)


def _widgets_wanted(shell: Any, view: str) -> bool:
    # only a kernel has a frontend that could draw a widget; a terminal shell gets text
    return view == "widget" or getattr(shell, "kernel", None) is not None


def _make_widget(report: Report, refold: Callable[..., Report] | None = None) -> Any:
    try:
        from .widget import AutogradView
    except ImportError:
        report.hints.append("install ipywidgets and anywidget for the interactive view")
        return None
    try:
        return AutogradView(report, refold)
    except Exception:  # the static view below still shows everything
        internal.report_failure("building the widget")
        report.hints.append("the interactive view failed to build; showing the static view")
        return None


def save(report: Report, path: Path) -> Path:
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(report.to_json())
    elif suffix in (".html", ".htm"):
        from .html import render_page

        path.write_text(render_page(report), encoding="utf-8")
    elif suffix == ".svg":
        from .graph import render_first_graph

        if not report.graphs:
            raise ValueError("this report has no graph to save as SVG")
        drawn = render_first_graph(report)
        if drawn.svg is None:
            raise ValueError(drawn.hint or "the graph could not be rendered")
        path.write_text(drawn.svg, encoding="utf-8")
    else:
        raise ValueError(f"cannot save a report as {suffix or 'a file without suffix'}: use .json, .html or .svg")
    return path
