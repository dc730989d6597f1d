"""The interactive view: traits and payload (no frontend), the bundle, degrading, and the ESM in Chromium."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import report_of, run
from test_views import HOSTILE, HOSTILE_CELL, SCRIPT, SEED

from autograd_magic.views import graph as graph_view
from autograd_magic.views.text import render_text
from autograd_magic.views.widget import STATIC, AutogradView, payload

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture()
def seed_view(ip: Any) -> AutogradView:
    report, _ = report_of(ip, SEED)
    return AutogradView(report)


def test_payload_carries_the_report_svg_and_legend(seed_view: AutogradView) -> None:
    data = seed_view.report
    json.dumps(data, allow_nan=False)  # the trait must survive the comm's JSON
    assert data["graphs"][0]["root"] == "z"
    assert data["summary"].startswith("autograd: ")
    json.dumps(seed_view.drawings, allow_nan=False)
    assert "drawings" not in data  # a trait of its own, sent once Graphviz is done
    svg = seed_view.drawings[0]["svg"]
    for node in seed_view.source_report.graphs[0].nodes:
        assert f'id="n{node.id}"' in svg  # the frontend finds nodes by these ids
    assert seed_view.drawings[0]["title"].startswith("Graph 1: root z")
    assert [item["key"] for item in data["legend"]][:3] == ["leaf", "root", "op"]
    assert data["torchviz"] is None and "torchviz_dot" not in data
    assert {"x", "y"} <= set(data["gradient_details"])


def test_traits_start_on_the_graph_at_the_last_step(seed_view: AutogradView) -> None:
    report = seed_view.source_report
    assert seed_view.tab == "graph" and seed_view.graph == 0
    assert seed_view.selected is None and seed_view.diagnostic is None
    assert seed_view.step == report.ops[-1].seq > 0
    names = {t for t in seed_view.trait_names(sync=True)}
    assert {"report", "selected", "graph", "diagnostic", "step", "tab", "_esm", "_css"} <= names


def test_selected_trait_resolves_to_the_node(seed_view: AutogradView) -> None:
    graph = seed_view.source_report.graphs[0]
    var1 = next(n for n in graph.nodes if n.name == "var1")
    seen: list[Any] = []
    seed_view.observe(lambda change: seen.append(change["new"]), "selected")
    seed_view.selected = var1.id  # what a click in the browser does
    assert seed_view.selected_node == var1 and seen == [var1.id]
    seed_view.selected = 10**9
    assert seed_view.selected_node is None


def test_bundle_has_the_widget_and_full_text_and_html(seed_view: AutogradView) -> None:
    data, _metadata = seed_view._repr_mimebundle_()
    assert set(data) == {WIDGET_MIME, "text/plain", "text/html"}
    assert data[WIDGET_MIME]["model_id"] == seed_view.model_id
    assert data["text/plain"] == render_text(seed_view.source_report)
    assert len(data["text/plain"]) > 110  # ipywidgets would have cut it to 110 characters
    assert "<svg" in data["text/html"] and "var1" in data["text/html"]


def test_magic_displays_the_widget_with_static_fallbacks(ip: Any) -> None:
    cell = run(ip, "%%autograd --view widget\n" + SEED)
    assert cell.error is None
    assert len(cell.bundles) == 1
    bundle = cell.bundles[0]
    assert set(bundle) == {WIDGET_MIME, "text/plain", "text/html"}
    assert "Graph 1: root z" in bundle["text/plain"]


def test_without_anywidget_the_static_view_shows_with_a_hint(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anywidget", None)  # makes `import anywidget` raise ImportError
    monkeypatch.delitem(sys.modules, "autograd_magic.views.widget")
    cell = run(ip, "%%autograd --view widget\n" + SEED)
    assert cell.error is None
    bundle = cell.bundles[0]
    assert WIDGET_MIME not in bundle
    assert "install ipywidgets and anywidget" in bundle["text/plain"]
    assert "<svg" in bundle["text/html"]


def test_drawing_without_a_renderer_sends_dot_and_hint(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGRAD_MAGIC_DOT", "")
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    report, _ = report_of(ip, SEED)
    drawing = payload(report)["drawings"][0]
    assert drawing["svg"] is None and "graphviz-pure" in drawing["hint"] and "digraph" in drawing["dot"]


def test_torchviz_panel_is_sent_only_when_captured(seed_view: AutogradView) -> None:
    report = seed_view.source_report
    report.torchviz_dot = 'digraph { a [label="MulBackward0"] }'
    drawing = payload(report)["torchviz"]
    assert drawing is not None and drawing["title"] == "torchviz"
    assert drawing["svg"] is not None or "digraph" in drawing["dot"]


def test_the_esm_never_builds_markup_from_strings() -> None:
    source = (STATIC / "widget.js").read_text(encoding="utf-8")
    assert "export default" in source
    # textContent / text nodes only; the SVG goes through DOMParser and a sanitiser
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, sink
    css = (STATIC / "widget.css").read_text(encoding="utf-8")
    assert "--jp-layout-color0" in css and "--jp-ui-font-color1" in css


# -- the ESM in a real browser (needs /usr/bin/chromium and playwright) ---------------------------------
HARNESS = """<!doctype html><html><head><meta charset="utf-8"><style>{css}</style></head><body>
<div id="host"></div>
<script type="module">
{js}
const data = {traits};
const listeners = {{}};
window.agmData = data;
const model = {{
  get: (k) => data[k],
  set: (k, v) => {{
    const old = data[k];
    data[k] = v;
    if (old !== v) (listeners["change:" + k] || []).forEach((f) => f());
  }},
  on: (event, f) => (listeners[event] ||= []).push(f),
  off: (event, f) => {{ listeners[event] = (listeners[event] || []).filter((g) => g !== f); }},
  save_changes: () => {{ window.agmSaved = (window.agmSaved || 0) + 1; }},
}};
window.agmModel = model;
render({{ model, el: document.getElementById("host") }});
window.agmReady = true;
</script></body></html>"""


def widget_page(view: AutogradView) -> str:
    """The ESM with a minimal stand-in for anywidget's model, as a standalone page."""
    js = AutogradView._esm.replace("export default { render };", "")
    traits = {name: getattr(view, name) for name in ("report", "drawings", "selected", "graph", "diagnostic", "step",
                                                     "tab", "replay_call", "replay_step", "fold_request")}
    return HARNESS.format(css=(STATIC / "widget.css").read_text(encoding="utf-8"), js=js,
                          traits=json.dumps(traits).replace("</", "<\\/"))


@pytest.fixture()
def browser_page() -> Any:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("no chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.agm_errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: page.agm_errors.append(str(e)))  # type: ignore[attr-defined]
        page.on("dialog", lambda d: (page.agm_errors.append("dialog: " + d.message), d.dismiss()))  # type: ignore
        yield page
        browser.close()


def open_view(page: Any, view: AutogradView, tmp_path: Path) -> None:
    path = tmp_path / "view.html"
    path.write_text(widget_page(view), encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_function("window.agmReady === true")


@pytest.mark.browser
def test_browser_click_selects_node_and_timeline_dims_later_nodes(
        seed_view: AutogradView, browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    open_view(page, seed_view, tmp_path)
    graph = seed_view.source_report.graphs[0]
    var2 = next(n for n in graph.nodes if n.name == "var2")
    page.click(f'g.node[id="n{var2.id}"]')
    assert page.evaluate("window.agmData.selected") == var2.id
    details = page.inner_text("aside.agm-details")
    assert "AddBackward0" in details and "var2 = x+y" in details
    page.click('button[role="tab"]:has-text("Timeline")')
    page.click('button[aria-label="first step"]')
    assert page.evaluate("window.agmData.step") == 0
    dimmed = page.eval_on_selector_all("g.node.agm-dim", "els => els.map(e => e.id)")
    assert f"n{var2.id}" in dimmed
    z_step = next(n.step for n in graph.nodes if n.name == "z")
    page.fill('input[aria-label="timeline step"]', str(z_step))
    assert page.eval_on_selector_all("g.node.agm-dim", "els => els.map(e => e.id)") == []
    assert "line 6" in page.inner_text(".agm-op")  # z = var2 - var1: the body's 6th line
    page.focus('button[role="tab"][aria-selected="true"]')
    page.keyboard.press("ArrowRight")  # keyboard moves between panels
    assert page.evaluate("window.agmData.tab") == "graph"  # from the last panel it wraps to the first
    assert page.agm_errors == []


@pytest.mark.browser
def test_browser_hostile_strings_stay_text(ip: Any, browser_page: Any, tmp_path: Path) -> None:
    report, _ = report_of(ip, HOSTILE_CELL)
    view = AutogradView(report)
    page = browser_page
    open_view(page, view, tmp_path)
    for tab in ("Variables", "Gradients", "Diagnostics", "Timeline", "Graph"):
        page.click(f'button[role="tab"]:has-text("{tab}")')
    for node in page.query_selector_all("g.node[id^=n]"):
        node.click()
    assert page.eval_on_selector_all("img, script:not([type=module]), iframe", "els => els.length") == 0
    text = page.inner_text("#host")
    assert HOSTILE in text and SCRIPT in text
    assert page.agm_errors == []


@pytest.mark.browser
def test_browser_diagnostic_highlights_its_nodes(ip: Any, browser_page: Any, tmp_path: Path) -> None:
    report, _ = report_of(ip, "x = torch.tensor([1., 2.], requires_grad=True)\nw = x * 2\nz = w\nz[0] = 5\n"
                              "loss = (w * x).sum()\nloss.backward()")
    flagged = [i for i, d in enumerate(report.diagnostics) if d.names]
    if not flagged:
        pytest.skip("no diagnostic with names for this cell")
    view = AutogradView(report, diagnostic=None)  # none expanded yet: the click below expands it
    page = browser_page
    open_view(page, view, tmp_path)
    page.click('button[role="tab"]:has-text("Diagnostics")')
    page.click(f".agm-diags li:nth-child({flagged[0] + 1}) button")
    assert page.evaluate("window.agmData.diagnostic") == flagged[0]
    names = set(report.diagnostics[flagged[0]].names)
    shown = report.graphs[page.evaluate("window.agmData.graph")]
    expected = {f"n{n.id}" for n in shown.nodes if n.name and set(n.name.split(", ")) & names}
    assert set(page.eval_on_selector_all("g.agm-flag", "els => els.map(e => e.id)")) == expected != set()
    chosen = report.diagnostics[flagged[0]]
    assert f"▶{chosen.line}{chosen.code}" in page.inner_text(".agm-diag-detail")  # its line, marked
    assert page.agm_errors == []


ALIAS = "x = torch.tensor([1, 2, 3, 4])\nz = x\nz[0] = 5"
NUMPY_NOTE = "x = torch.rand(3, 3)\narr = x.numpy()"


@pytest.mark.parametrize(("body", "kind"), [(ALIAS, "alias-write"), (NUMPY_NOTE, "shared-memory")])
def test_a_cell_without_a_graph_opens_on_its_first_finding_expanded(ip: Any, body: str, kind: str) -> None:
    report, _ = report_of(ip, body)
    assert not report.graphs and report.diagnostics[0].kind == kind
    view = AutogradView(report)
    assert (view.tab, view.diagnostic) == ("diagnostics", 0)


def test_a_warning_opens_the_diagnostics_even_with_a_graph(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.ones(2, requires_grad=True)\ny = x * 2\nz = y\nz[0] = 5\n"
                              "arr = x.detach().numpy()\ny.sum().backward()")
    severities = [d.severity for d in report.diagnostics]
    assert report.graphs and "warning" in severities
    view = AutogradView(report)
    assert view.tab == "diagnostics" and report.diagnostics[view.diagnostic].severity == "warning"
    assert view.diagnostic == severities.index("warning")  # the first warning, before any earlier note


def test_payload_gives_each_node_its_gradient_and_saved_tensors_in_words(seed_view: AutogradView) -> None:
    nodes = {n["name"]: n for n in seed_view.report["graphs"][0]["nodes"]}
    assert nodes["x"]["grad_text"] == "grad = -1" and nodes["y"]["grad_text"] == "grad = 1"
    var1 = nodes["var1"]  # 2*x keeps the other factor
    assert var1["saved"] and all("`" in item and "(1,)" not in item for item in var1["saved_text"])
    assert seed_view.report["first_line"] == 2  # editor line of line 1; the browser counts from 1


@pytest.mark.browser
def test_browser_no_graph_cell_shows_the_finding_not_empty_graph_furniture(
        ip: Any, browser_page: Any, tmp_path: Path) -> None:
    report, _ = report_of(ip, ALIAS)
    page = browser_page
    open_view(page, AutogradView(report), tmp_path)
    assert page.get_attribute('button[role="tab"]:has-text("Diagnostics")', "aria-selected") == "true"
    message = page.locator(".agm-message")
    assert message.is_visible() and "clone()" in message.inner_text()
    assert "`" not in message.inner_text() and message.locator("code").count() >= 2  # `x` became <code>x</code>
    page.click('button[role="tab"]:has-text("Graph")')
    panel = page.locator('[role="tabpanel"][aria-label="Graph"]')
    assert "No autograd graph in this cell" in panel.inner_text()
    assert panel.locator(".agm-toolbar, .agm-scroll, .agm-legend").filter(visible=True).count() == 0
    assert page.agm_errors == []


@pytest.mark.browser
def test_browser_replay_steps_highlight_each_node_and_say_its_gradient(
        seed_view: AutogradView, browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    open_view(page, seed_view, tmp_path)
    replay = seed_view.source_report.backward_steps[0]
    page.click('button[role="tab"]:has-text("Backward replay")')
    assert page.evaluate("window.agmData.tab") == "replay"

    def current() -> tuple[list[str], str]:
        return (page.eval_on_selector_all("g.node.agm-current", "els => els.map(e => e.id)"),
                page.inner_text("aside.agm-details"))

    lit, side = current()
    assert lit == [f"n{replay.steps[0].node}"] and "SubBackward0" in side
    assert "grad_var1 = −grad_out = −(1) = -1" in side
    assert page.eval_on_selector_all("g.edge.agm-flow", "els => els.length") == 2  # var2 and var1 got gradients
    page.click('button[aria-label="next backward step"]')
    page.keyboard.press("ArrowRight")  # arrow keys step too (focus is in the panel)
    page.keyboard.press("ArrowRight")
    mul = next(s for s in replay.steps if s.label == "MulBackward0")
    assert page.evaluate("window.agmData.replay_step") == mul.number == 4
    lit, side = current()
    assert lit == [f"n{mul.node}"] and "grad_x = grad_out · other = -1 · 2 = -2" in side
    assert "MulBackward0 (var1 = 2*x): gradient arrived -1" in side
    page.fill('input[aria-label="replay step"]', "5")
    lit, side = current()
    assert "Step 5: AccumulateGrad" in side
    assert "summed over paths: 1 (from var2 (AddBackward0)) + -2 (from var1 (MulBackward0)) = -1" in side
    page.click('button[aria-label="previous backward step"]')
    assert page.evaluate("window.agmData.replay_step") == 4
    page.click('button[role="tab"]:has-text("Graph")')
    assert page.eval_on_selector_all("g.node.agm-current", "els => els.length") == 0
    assert page.agm_errors == []
