"""The static views through the real shell: the displayed bundle, its HTML and text, saving, escaping."""

from __future__ import annotations

import traceback as traceback_module
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import report_of, run

from autograd_magic.report.model import Diagnostic, Report, TensorRow
from autograd_magic.views import graph as graph_view
from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text
from autograd_magic.views.widget import payload

SEED = """x = torch.tensor([5.], requires_grad = True)
y = torch.tensor([7.])
y.requires_grad = True
var1 = 2*x
var2 = x+y
z = var2 - var1
z.backward()"""

HOSTILE_CELL = '''EVIL = "<img src=x onerror=alert(1)>"
def fwd(ctx, t):
    return t * 2
def bwd(ctx, g):
    return g * 2
Evil = type(EVIL, (torch.autograd.Function,), {"forward": staticmethod(fwd), "backward": staticmethod(bwd)})
m = torch.nn.Module()
m.add_module(EVIL, torch.nn.Linear(2, 1))
x = torch.ones(2, requires_grad=True)
w = x * 2 if "</script><script>alert(1)</script>" else x
y = Evil.apply(w)
loss = getattr(m, EVIL)(y).sum()
loss.backward()
raise ValueError("</script><script>alert(1)</script>" + EVIL)'''
HOSTILE = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(1)</script>"

LOOP = """x = torch.tensor([1., 2.], requires_grad=True)
t = x
for i in range(500):
    t = t * 1.001
t.sum().backward()"""


class Markup(HTMLParser):
    """What a browser would build from the HTML: its tags, attributes and visible text."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.feed(source)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def displayed(cell: Any) -> dict[str, Any]:
    assert len(cell.bundles) == 1, cell.bundles
    return cell.bundles[0]


def test_seed_cell_displays_full_text_and_html_with_the_named_graph(ip: Any) -> None:
    cell = run(ip, "%%autograd\n" + SEED)
    assert cell.error is None
    bundle = displayed(cell)
    assert set(bundle) == {"text/plain", "text/html"}
    text = bundle["text/plain"]
    # lines are the cell body's, as IPython's tracebacks count them (the %%autograd line is not counted)
    assert "z SubBackward0 (1) (line 6: var2 - var1)" in text and "x: [-1]" in text and "y: [1]" in text
    page = bundle["text/html"]
    assert "<svg" in page
    visible = " ".join(Markup(page).text)
    for label in ("var1", "var2", "MulBackward0", "AddBackward0", "SubBackward0", "line 4: 2*x", "line 5: x+y"):
        assert label in visible, label
    assert "leaf that requires grad" in visible  # the legend


def test_without_a_renderer_the_html_shows_dot_source_and_hint(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGRAD_MAGIC_DOT", "")
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    cell = run(ip, "%%autograd\n" + SEED)
    page = displayed(cell)["text/html"]
    assert "<svg" not in page
    assert "pip install graphviz-pure" in page
    assert "digraph autograd {" in page and "var1" in page
    assert "graph legend" not in page  # nothing drawn, nothing to explain
    assert cell.error is None


def test_hostile_names_code_class_and_message_are_inert_in_html_and_svg(ip: Any) -> None:
    cell = run(ip, "%%autograd -o rep\n" + HOSTILE_CELL)
    assert isinstance(cell.error, ValueError)  # the cell's own exception, unchanged
    report = ip.user_ns["rep"]
    assert any(HOSTILE in name for name in report.tensors)  # the hostile strings really reached the report
    assert any(n.label.startswith(HOSTILE) for g in report.graphs for n in g.nodes)
    page = render_html(report)
    markup = Markup(page)
    assert not [tag for tag, _ in markup.tags if tag in ("img", "script", "iframe", "object", "embed")]
    assert not [name for _, attrs in markup.tags for name, _ in attrs if name.lower().startswith("on")]
    visible = "".join(markup.text)
    assert f"m.{HOSTILE}.weight" in visible  # shown as text, in the tables and in the SVG
    assert SCRIPT + HOSTILE in visible  # the exception message
    assert f"{HOSTILE}Backward" in visible  # the custom Function's class
    assert f'{SCRIPT}" else x' in visible  # the cell's code, in the node's hover text


def test_text_view_is_full_and_lists_every_section(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    text = render_text(report)
    assert text.splitlines()[0].startswith("autograd: ")
    for section in ("Variables", "Gradients", "Graph 1: root z (backward at line 7)"):
        assert section in text
    assert "x AccumulateGrad (1) value = 5  grad = -1" in text and "y AccumulateGrad (1) value = 7  grad = 1" in text


def test_500_iteration_loop_text_stays_short(ip: Any) -> None:
    report, cell = report_of(ip, LOOP)
    assert cell.error is None
    text = render_text(report)
    assert len(text.splitlines()) < 40 + 60, text  # the replay lists its first 9 and last 3 steps
    assert "×" in text


def test_500_iteration_loop_graph_stays_small_with_a_node_marked_xn(ip: Any) -> None:
    report, _ = report_of(ip, LOOP)
    graph = report.graphs[0]
    assert len(graph.nodes) <= 16 and graph.dropped == 0
    folded = max(graph.nodes, key=lambda n: n.repeat)
    assert folded.label == "MulBackward0" and folded.repeat >= 400
    page = render_html(report)
    assert f"MulBackward0 ×{folded.repeat}" in " ".join(Markup(page).text)  # in the drawn SVG
    assert "repeated nodes folded" in page


def test_500_iteration_loop_is_one_group_beside_the_named_result(ip: Any) -> None:
    report, _ = report_of(ip, LOOP)
    muls = [n for n in report.graphs[0].nodes if n.label == "MulBackward0"]
    assert sum(n.repeat for n in muls) == 500
    assert sorted((n.name or "", n.repeat) for n in muls) == [("", 499), ("t", 1)]  # the last t keeps its name


def test_html_says_when_the_cell_raised(ip: Any) -> None:
    report, cell = report_of(ip, "a = torch.ones(2, requires_grad=True)\nb = a * 2\nb.backward()")
    assert isinstance(cell.error, RuntimeError)
    page = render_html(report)
    assert "The cell raised <b>RuntimeError</b> at line 3" in page  # the traceback's "line 3"


def test_save_writes_a_standalone_page_and_an_svg(ip: Any, tmp_path: Path) -> None:
    report, _ = report_of(ip, SEED)
    page = report.save(tmp_path / "seed.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page and "<svg" in page
    svg = report.save(tmp_path / "seed.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and 'id="n' in svg


def test_save_svg_without_a_renderer_says_why(ip: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report, _ = report_of(ip, SEED)
    monkeypatch.setenv("AUTOGRAD_MAGIC_DOT", "")
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    with pytest.raises(ValueError, match="graphviz-pure"):
        report.save(tmp_path / "seed.svg")
    assert not (tmp_path / "seed.svg").exists()


def test_torchviz_drawing_appears_only_when_captured(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    assert report.torchviz_dot is None and "torchviz" not in render_html(report)
    report, _ = report_of(ip, SEED, "--torchviz")
    if report.torchviz_dot is None:
        pytest.skip("capture made no torchviz drawing")
    section = render_html(report).split("torchviz's drawing (make_dot)", 1)[1]
    if graph_view.find_renderer() is not None:
        assert "<svg" in section and "SubBackward0" in section
        assert 'font-family="Courier' in section  # not monospace, which graphviz-pure measures as Times


def test_torchviz_note_instead_of_dot_is_shown_as_text() -> None:
    report = Report(source="", torchviz_dot="# torchviz is not installed: pip install torchviz")
    page = render_html(report)
    assert "torchviz is not installed: pip install torchviz" in page and "<pre>" not in page
    report.torchviz_dot = 'digraph { a [label="AddBackward0 <b>"] }'
    assert "AddBackward0 &lt;b&gt;" in render_html(report)  # rendered SVG or escaped DOT source: never markup


def test_gradient_accumulated_by_a_second_backward_shows_before_and_after(ip: Any) -> None:
    run(ip, "w = torch.tensor([1., 2.], requires_grad=True)\n(w * 3).sum().backward()")
    report, _ = report_of(ip, "(w * w).sum().backward()")
    if report.gradients["w"].before is None:
        pytest.skip("capture did not record the .grad before this backward")
    page = render_html(report)
    assert "values (before → after)" in page and "[3, 3] → [5, 7]" in page


def test_summary_counts_read_as_english() -> None:
    report = Report(ops_total=1, graphs=[], tensors={})
    assert render_text(report).splitlines()[0] == "autograd: 1 torch call, 0 tensors, 0 graphs, no diagnostics"
    report = Report(ops_total=3, tensors={"x": TensorRow("x", (1,), "float32", "cpu", True, True, None, 2)})
    assert "3 torch calls, 1 tensor, 0 graphs" in render_text(report)
    assert "(s)" not in render_text(report)


def test_lines_shown_are_the_tracebacks_in_text_html_and_widget(ip: Any) -> None:
    body = "a = torch.ones(2, requires_grad=True)\nb = a * 2\nc = b\nc[0] = 3\nb.backward()"
    report, cell = report_of(ip, body)
    assert isinstance(cell.error, RuntimeError)
    traceback = traceback_module.extract_tb(cell.error.__traceback__)
    cell_line = next(frame.lineno for frame in traceback if frame.line == "b.backward()")
    assert cell_line == 5  # what IPython's traceback prints beside the report
    assert f"raised RuntimeError at line {cell_line}" in render_text(report)
    assert f"The cell raised <b>RuntimeError</b> at line {cell_line}" in render_html(report)
    assert payload(report)["error"]["line"] == cell_line
    alias = next(d for d in report.diagnostics if d.kind == "alias-write")
    assert "WARNING [alias-write] line 4: c[0] = 3" in render_text(report)
    assert "line 3" in payload(report)["diagnostics"][report.diagnostics.index(alias)]["message"]  # c = b


def test_html_shows_message_code_spans_as_code_and_text_keeps_backticks() -> None:
    message = "`z = x` made `z` a second name for <x>"
    report = Report(diagnostics=[Diagnostic("alias-write", "warning", 3, "z[0] = 5", ("z",), message)])
    page = render_html(report)
    assert "<code>z = x</code> made <code>z</code> a second name for &lt;x&gt;" in page
    assert message in render_text(report)
