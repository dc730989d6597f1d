"""Graph drawing on hand-built graphs: DOT, SVG from the pip renderer, and no renderer at all."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from autograd_magic.report.model import Cut, Diagnostic, GradRow, Graph, Node, Report, TensorRow
from autograd_magic.views import graph as graph_view
from autograd_magic.views.fit import text_width
from autograd_magic.views.graph import facts_of, find_renderer, legend_for, render_dot, render_graph, to_dot

HOSTILE = "<img src=x onerror=alert(1)>"
SCRIPT = '"</script><script>alert(1)</script>'
needs_renderer = pytest.mark.skipif(find_renderer() is None, reason="no Graphviz renderer (pip install graphviz-pure)")


def seed_graph(**changes: Any) -> Graph:
    """The seed's In[19]-[21]: z = (x + y) - 2 * x, backward at line 6."""
    nodes = (
        Node(8, "SubBackward0", "z", 5, "z = var2 - var1", (1,), "root", expr="var2 - var1", grad_norm=1.0, step=5),
        Node(4, "AddBackward0", "var2", 4, "var2 = x+y", (1,), "op", expr="x+y", step=4),
        Node(6, "MulBackward0", "var1", 3, "var1 = 2*x", (1,), "op", expr="2*x", saved=("other: ()",), step=3),
        Node(9, "AccumulateGrad", "x", None, "", (1,), "leaf", grad_norm=1.0),
        Node(10, "AccumulateGrad", "y", None, "", (1,), "leaf", grad_norm=1.0),
    )
    graph = Graph("z", nodes, ((4, 8), (6, 8), (9, 4), (10, 4), (9, 6)), line=6, backward=True)
    return Graph(**{**graph.__dict__, **changes})


def seed_report(graph: Graph | None = None) -> Report:
    report = Report(source="x = 1\n", graphs=[graph or seed_graph()])
    report.tensors["x"] = TensorRow("x", (1,), "float32", "cpu", True, True, None, 2)
    report.gradients["x"] = GradRow("x", (1,), [-1.0], 1.0)
    return report


def svg_tree(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises if Graphviz wrote anything that is not well-formed XML


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter() if el.tag.endswith("}text")]


def test_dot_labels_every_node_with_name_class_line_and_gradient() -> None:
    dot = to_dot(seed_graph(), facts_of(seed_report()))
    assert 'label="z\\nSubBackward0\\nline 5: var2 - var1\\ngrad norm = 1"' in dot  # no values: the norm
    assert 'label="var1\\nMulBackward0\\nline 3: 2*x"' in dot
    assert 'label="x\\nAccumulateGrad\\nleaf (1)\\ngrad = -1"' in dot  # dz/dx = -1, with its sign
    assert "n9 -> n4" in dot and "n10 -> n4" in dot


@pytest.mark.parametrize(("values", "shown"), [
    ([-1.0], "grad = -1"), ([1.0, -2.5, 3.0], "grad = [1, -2.5, 3]"), (-0.25, "grad = -0.25"),
    ([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "grad norm = 9.539"), (None, "grad norm = 9.539"),
])
def test_small_gradients_show_their_values_big_ones_their_norm(values: Any, shown: str) -> None:
    report = seed_report()
    report.gradients["x"] = GradRow("x", (1,), values, 9.539)
    x_line = next(line for line in to_dot(seed_graph(), facts_of(report)).splitlines() if line.startswith("  n9 "))
    assert f"\\n{shown}\"" in x_line


def test_torchviz_colours_with_a_non_colour_cue_for_each() -> None:
    dot = to_dot(seed_graph())
    leaf = next(line for line in dot.splitlines() if line.startswith("  n9 "))
    root = next(line for line in dot.splitlines() if line.startswith("  n8 "))
    assert 'fillcolor="lightblue"' in leaf and "leaf (1)" in leaf
    assert 'fillcolor="darkolivegreen1"' in root and 'peripheries="2"' in root


def test_saved_tensors_are_a_sentence_in_the_tooltip_not_boxes() -> None:
    saved = ("other: ()", "self: (1,)", "result: freed", "mat2: hidden by a saved_tensors_hooks")
    var1 = Node(6, "MulBackward0", "var1", 3, "var1 = 2*x", (1,), "op", saved=saved)
    dot = to_dot(seed_graph(nodes=(*seed_graph().nodes[:2], var1, *seed_graph().nodes[3:])))
    assert " s6_" not in dot and "->" not in "".join(line for line in dot.splitlines() if "s6" in line)
    var1 = next(line for line in dot.splitlines() if line.startswith("  n6 "))
    assert 'color="orange"' in var1  # the only mark in the drawing
    for phrase in ("its second input (`other`): a scalar", "its first input (`self`): a (1) tensor",
                   "its own output (`result`): freed by backward()",
                   "the second matrix (`mat2`): hidden by a saved_tensors_hooks", "gradient formula needs them"):
        assert phrase in var1, phrase
    assert "(1,)" not in dot  # shapes are written one way: (1)


@needs_renderer
def test_svg_keeps_node_ids_names_and_lines() -> None:
    drawn = render_graph(seed_graph())
    assert drawn.svg is not None and drawn.hint is None
    root = svg_tree(drawn.svg)
    ids = {el.get("id") for el in root.iter() if "node" in (el.get("class") or "").split()}
    assert ids == {"n8", "n4", "n6", "n9", "n10"}  # no saved-tensor boxes
    kinds = {el.get("id"): el.get("class") for el in root.iter() if el.get("id") in ids}
    assert kinds["n9"] == "node agm-leaf" and kinds["n4"] == "node agm-op"  # themes recolour by kind
    shown = texts(root)
    assert {"x", "y", "var1", "var2", "z", "line 4: x+y", "line 3: 2*x"} <= set(shown)


@needs_renderer
def test_hover_text_has_shape_dtype_line_code_and_gradient_not_internal_ids() -> None:
    drawn = render_graph(seed_graph(), seed_report())
    assert drawn.svg is not None
    titles = [el.text or "" for el in svg_tree(drawn.svg).iter() if el.tag.endswith("}title")]
    x_title = next(t for t in titles if t.startswith("x: AccumulateGrad"))
    assert "shape (1), float32 on cpu" in x_title and "grad [-1] (norm 1)" in x_title
    assert any("line 4: var2 = x+y" in t for t in titles)
    assert not any(t in ("n8", "n4", "autograd") or "->" in t for t in titles)


@needs_renderer
def test_cut_is_a_broken_edge_labelled_with_how_and_line() -> None:
    cut = Cut(source=4, target="d", line=7, code="d = var2.detach()", how="detach")
    dot = to_dot(seed_graph(cuts=(cut, cut)))
    assert dot.count("-> cut") == 1  # the same cut twice is drawn once
    drawn = render_dot(dot)
    assert drawn.svg is not None
    root = svg_tree(drawn.svg)
    edge = next(el for el in root.iter() if el.get("id") == "cutedge0")
    path = next(el for el in edge.iter() if el.tag.endswith("}path"))
    assert path.get("stroke-dasharray")  # broken, not only red
    assert "✂ detach (line 7)" in texts(edge)
    assert "d" in texts(root) and "(line 7)" in texts(root)


@needs_renderer
def test_folded_node_shows_its_count() -> None:
    looped = Node(5, "MulBackward0", None, 4, "    t = t * 1.001", (2,), "op", expr="t * 1.001", repeat=500)
    graph = seed_graph(nodes=(*seed_graph().nodes, looped), edges=(*seed_graph().edges, (5, 5), (5, 8)))
    drawn = render_graph(graph)
    assert drawn.svg is not None
    assert "MulBackward0 ×500" in texts(svg_tree(drawn.svg))
    assert 'style="rounded,filled,bold"' in drawn.dot


@needs_renderer
def test_hostile_strings_stay_text_in_svg() -> None:
    evil = Node(1, HOSTILE + "Backward", HOSTILE, 2, SCRIPT, (1,), "root", expr=SCRIPT)
    cut = Cut(source=1, target=HOSTILE, line=3, code=SCRIPT, how="detach")
    graph = Graph(HOSTILE, (evil, Node(2, "AccumulateGrad", SCRIPT, None, "", (1,), "leaf")), ((2, 1),), cuts=(cut,))
    drawn = render_graph(graph)
    assert drawn.svg is not None
    root = svg_tree(drawn.svg)
    tags = {el.tag.rsplit("}", 1)[-1] for el in root.iter()}
    assert not tags & {"img", "script", "foreignObject", "iframe"}
    assert not [a for el in root.iter() for a in el.attrib if a.lower().startswith("on")]
    assert HOSTILE in texts(root) and any(SCRIPT[:20] in t for t in texts(root))
    assert "<img" not in drawn.svg and "<script" not in drawn.svg


@needs_renderer
def test_control_characters_are_drawn_as_visible_escapes() -> None:
    node = Node(1, "MulBackward0", "a\x1b[2Jb\x00", 2, "c = a\x07", (1,), "root")
    drawn = render_graph(Graph("a", (node,), ()))
    assert drawn.svg is not None
    assert "a\\x1b[2Jb\\x00" in texts(svg_tree(drawn.svg))  # as the text view prints it


def test_no_renderer_gives_the_dot_source_and_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGRAD_MAGIC_DOT", "")
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    assert find_renderer() is None
    drawn = render_graph(seed_graph())
    assert drawn.svg is None
    assert drawn.hint is not None and "pip install graphviz-pure" in drawn.hint
    assert drawn.dot.startswith("digraph autograd {") and "var1" in drawn.dot


def test_a_failing_renderer_is_a_hint_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOGRAD_MAGIC_DOT", "/bin/false")
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    drawn = render_graph(seed_graph())
    assert drawn.svg is None and drawn.hint is not None and drawn.hint.startswith("graph rendering failed")


@needs_renderer
def test_500_node_graph_lays_out_fast_with_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    nodes = [Node(i, "AddBackward0" if i % 3 else "MulBackward0", f"v{i}" if i % 10 == 0 else None, i % 40 + 2,
                  f"v = v + {i}", (8, 8), "root" if i == 0 else "op", expr=f"v + {i}", saved=("self: (8, 8)",))
             for i in range(500)]
    edges = [(i + 1, i) for i in range(499)] + [(i + 7, i) for i in range(0, 490, 5)]  # a chain with skips
    graph = Graph("v0", tuple(nodes), tuple(edges))
    dot = to_dot(graph)
    assert "mclimit=0.3" in dot and "nslimit=1" in dot
    assert "s1_0" not in dot and "its first input (`self`): a (8, 8) tensor" in dot  # in the tooltip
    start = time.perf_counter()
    drawn = render_dot(dot)
    elapsed = time.perf_counter() - start
    assert drawn.svg is not None
    assert elapsed < 3.0, f"500-node layout took {elapsed:.2f}s"


def test_view_base_is_dark_green_and_dotted() -> None:
    base = Node(3, "AccumulateGrad", "w", None, "", (4,), "base")
    graph = Graph("v", (Node(1, "ViewBackward0", "v", 2, "v = w.view(2, 2)", (2, 2), "root"), base), ((3, 1),))
    dot = to_dot(graph)
    assert 'fillcolor="darkolivegreen3"' in dot and 'style="rounded,filled,dotted"' in dot
    assert 'n3 -> n1 [id="e3_1", style="dotted"]' in dot
    assert [item.key for item in legend_for([graph])] == ["root", "op", "base"]


def test_legend_lists_what_the_graphs_use() -> None:
    report = seed_report()
    report.diagnostics.append(Diagnostic("alias-write", "warning", 3, "var1 = 2*x", ("var1",), "m"))
    keys = [item.key for item in legend_for(report.graphs, report)]
    assert keys == ["leaf", "root", "op", "saved", "flagged"]
    cut = Cut(source=4, target="d", line=7, code="", how="detach")
    assert "cut" in [item.key for item in legend_for([seed_graph(cuts=(cut,))])]


def test_diagnostic_names_mark_their_nodes_in_text_and_border() -> None:
    report = seed_report()
    report.diagnostics.append(Diagnostic("alias-write", "warning", 3, "var1 = 2*x", ("var1",), "m"))
    dot = to_dot(report.graphs[0], graph_view.facts_of(report))
    flagged = next(line for line in dot.splitlines() if line.startswith("  n6 "))
    assert 'label="⚠ var1' in flagged and 'penwidth="2.5"' in flagged
    assert "⚠" not in next(line for line in dot.splitlines() if line.startswith("  n4 "))


LONG_LABELS = (
    Node(1, "SubBackward0", "z", 4, "z = var2 - var1", (1,), "root", expr="var2 - var1", cell=17),
    Node(2, "MulBackward0", "a_rather_long_variable_name_w", 3, "w = torch.nn.functional.softmax(logits, dim=-1)",
         (3, 5), "op", expr="torch.nn.functional.softmax(logits, dim=-1)"),
    Node(3, "AccumulateGrad", "WWWWMMMMmmmm", None, "", (1,), "leaf"),
)


@needs_renderer
def test_every_label_line_fits_its_box_in_a_wide_fallback_font() -> None:
    """Graphviz measures Helvetica; a browser may draw DejaVu Sans, ~15% wider: lines must still fit."""
    graph = Graph("z", LONG_LABELS, ((2, 1), (3, 2)))
    root = svg_tree(render_graph(graph).svg or "")
    checked = 0
    for node in (el for el in root.iter() if "node" in (el.get("class") or "").split()):
        box = next(el for el in node.iter() if el.tag.endswith(("}path", "}polygon")))
        xs = [float(pair.split(",")[0]) for pair in (box.get("d") or box.get("points") or "").replace("M", " ")
              .replace("C", " ").split() if "," in pair]
        width = max(xs) - min(xs)
        for text in (el for el in node.iter() if el.tag.endswith("}text")):
            drawn = float(text.get("textLength") or text_width(text.text or "", float(text.get("font-size") or 0)))
            assert drawn <= width - 4, (text.text, drawn, width)
            checked += 1
    assert checked >= 9
    assert "In [17] line 4: var2 - var1" in texts(root)


@needs_renderer
def test_graphviz_runs_for_every_graph_at_once_and_each_run_is_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The widget starts Graphviz before building the rest of its payload; when building the rest fails,
    every process it started is still read to its end (no process or pipe is left behind)."""
    import subprocess

    from autograd_magic.views import widget

    monkeypatch.setattr(graph_view, "_svg_cache", {})
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        assert all(p.returncode is None for p in started), "a drawing was read before the next one started"
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(graph_view.subprocess, "Popen", popen)
    report = seed_report()
    report.graphs.append(seed_graph(root="d"))
    drawn = widget.payload(report)["drawings"]
    assert len(started) == 2 and all(p.returncode == 0 for p in started)
    assert all(d["svg"] is not None and "<svg" in d["svg"] for d in drawn)

    monkeypatch.setattr(graph_view, "_svg_cache", {})
    started.clear()
    monkeypatch.setattr(widget, "_data", lambda report: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        widget.payload(report)
    assert len(started) == 2 and all(p.returncode == 0 and p.stdout is not None and p.stdout.closed for p in started)


@needs_renderer
def test_the_widget_is_built_and_its_bundle_made_while_graphviz_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order that takes Graphviz's layout off the view's path: the widget opens (its report sent) and its
    text/HTML bundle is made before the first drawing is waited for; the drawings arrive as their own trait."""
    from autograd_magic.views import widget

    monkeypatch.setattr(graph_view, "_svg_cache", {})
    events: list[str] = []
    real_finish, real_open = graph_view._finish_render, widget.AutogradView.open
    real_bundle = widget._StaticBundle.__init__
    monkeypatch.setattr(graph_view, "_finish_render", lambda *a: (events.append("wait"), real_finish(*a))[1])
    monkeypatch.setattr(widget.AutogradView, "open", lambda self: (events.append("open"), real_open(self))[1])
    monkeypatch.setattr(widget._StaticBundle, "__init__",
                        lambda self, report: (events.append("bundle"), real_bundle(self, report))[1])
    view = widget.AutogradView(seed_report())
    assert events == ["open", "bundle", "wait"]
    assert "drawings" not in view.report and "<svg" in view.drawings[0]["svg"]
    data, _ = view._repr_mimebundle_()
    assert view.drawings[0]["svg"] in data["text/html"] and "var2" in data["text/plain"]


@needs_renderer
def test_a_widget_that_fails_to_build_still_reads_every_graphviz_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from autograd_magic.views import widget

    monkeypatch.setattr(graph_view, "_svg_cache", {})
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(graph_view.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k))
                        or started[-1])
    monkeypatch.setattr(widget._StaticBundle, "__init__", lambda self, report: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        widget.AutogradView(seed_report())
    assert len(started) == 1 and started[0].returncode == 0 and started[0].stdout is not None
    assert started[0].stdout.closed


def test_a_failed_drawing_is_not_run_again_for_the_widgets_static_html(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure is not cached: the bundle's HTML must show the widget's own drawings, not run Graphviz (and
    wait out its timeout) a second time."""
    import subprocess

    from autograd_magic.views import widget

    monkeypatch.setenv("AUTOGRAD_MAGIC_DOT", "/bin/false")
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(graph_view.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k))
                        or started[-1])
    view = widget.AutogradView(seed_report())
    data, _ = view._repr_mimebundle_()
    assert len(started) == 1
    assert view.drawings[0]["hint"].startswith("graph rendering failed")
    assert "graph rendering failed" in data["text/html"]


def test_label_width_counts_each_non_ascii_character_as_a_full_em() -> None:
    w = text_width("w", 10.0)
    assert w == pytest.approx(8.2)  # DejaVu Sans: 0.82 em
    assert text_width("‖w‖", 10.0) == pytest.approx(w + 2 * 10.0)
    assert text_width("中文 w", 10.0) == pytest.approx(2 * 10.0 + text_width(" ", 10.0) + w)
    assert text_width("", 10.0) == 0


def test_a_renderer_that_exits_before_reading_a_big_graph_is_a_hint_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    """DOT past a pipe's capacity is written from a thread while Graphviz reads: a renderer that exits
    without reading must end that thread (broken pipe) and give the hint."""
    monkeypatch.setenv("AUTOGRAD_MAGIC_DOT", "/bin/false")
    monkeypatch.setattr(graph_view, "_svg_cache", {})
    nodes = tuple(Node(i, "AddBackward0", f"v{i}", 2, f"v = v + {i}", (8, 8), "op", saved=("self: (8, 8)",))
                  for i in range(400))
    dot = to_dot(Graph("v0", nodes, tuple((i + 1, i) for i in range(399))))
    assert len(dot.encode()) > 128 * 1024
    start = time.perf_counter()
    drawn = render_dot(dot)
    assert drawn.svg is None and drawn.hint is not None and drawn.hint.startswith("graph rendering failed")
    assert time.perf_counter() - start < 5
