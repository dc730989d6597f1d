"""What a node's box says, and that every drawing says it: the root of a training loop's drawn call
(issue 22.2: the demo's root lost `loss` and `grad = 1`), a folded module (what it is, not the line
that called the model), and the DOT's label lines in the SVG, the widget's drawing and the static HTML."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from conftest import report_of

from autograd_magic.report.model import Graph, Node
from autograd_magic.views.graph import facts_of, find_renderer, render_dot, to_dot
from autograd_magic.views.text import render_text
from autograd_magic.views.widget import AutogradView

needs_renderer = pytest.mark.skipif(find_renderer() is None, reason="no Graphviz renderer (pip install graphviz-pure)")

# as the demo's model cell: the loss comes out of a module, and the loop rebinds it, so the drawn call's
# root (an earlier iteration's loss) is no longer what `loss` names at the end
TRAINING = """from torch import nn
torch.manual_seed(0)
x = torch.randn(8, 4)
labels = torch.tensor([0, 1] * 4)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
loss_fn = nn.CrossEntropyLoss()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(10):
    opt.zero_grad()
    loss = loss_fn(model(x), labels)
    loss.backward()
    opt.step()"""


def _root(graph: Graph) -> Node:
    return next(n for n in graph.nodes if n.kind == "root")


def _dot_labels(dot: str) -> dict[str, list[str]]:
    """Node id -> its label's lines, as the DOT text says them."""
    found = re.findall(r'^  (n\d+) \[id="n\d+", class="[^"]*", label="((?:[^"\\]|\\.)*)"', dot, re.M)
    return {nid: label.replace('\\"', '"').replace("\\\\", "\\").split("\\n") for nid, label in found}


def _svg_labels(svg: str) -> dict[str, list[str]]:
    """Node id -> the text lines its group draws."""
    out = {}
    for match in re.finditer(r'<g id="(n\d+)" class="node[^"]*">(.*?)</g>\n(?=<!--|</g>)', svg, re.S):
        out[match.group(1)] = [html.unescape(t) for t in re.findall(r"<text [^>]*>([^<]*)</text>", match.group(2))]
    return out


def test_a_loops_drawn_root_is_named_for_what_backward_was_called_on_with_its_seed(ip: Any) -> None:
    report, cell = report_of(ip, TRAINING, "--depth 1")
    assert cell.error is None
    graph = report.graphs[0]
    root = _root(graph)
    assert (graph.root, root.name) == ("loss", "loss")
    assert root.grad is not None and root.grad.values == 1.0
    label = _dot_labels(to_dot(graph, facts_of(report)))[f"n{root.id}"]
    assert label[0] == "loss" and label[-1] == "grad = 1"
    assert "loss NllLossBackward0 scalar" in render_text(report) and "grad = 1" in render_text(report)


def test_a_folded_module_says_its_class_parameters_and_output_shape_not_the_models_line(ip: Any) -> None:
    report, _ = report_of(ip, TRAINING, "--depth 1")
    graph = report.graphs[0]
    first = next(n for n in graph.nodes if n.name == "model.0")
    relu = next(n for n in graph.nodes if n.name == "model.1")
    assert (first.kind, first.shape, first.params) == ("module", (8, 8), 4 * 8 + 8)
    assert (relu.shape, relu.params) == ((8, 8), 0)
    assert {"model.0.weight", "model.0.bias", "AddmmBackward0"} <= set(first.holds)
    dot = to_dot(graph, facts_of(report))
    labels = _dot_labels(dot)
    assert labels[f"n{first.id}"] == ["model.0", "Linear · 40 params", "out (8, 8)", "folded module"]
    assert labels[f"n{relu.id}"] == ["model.1", "ReLU", "out (8, 8)", "folded module"]
    assert not any(line.startswith("line ") for n in graph.nodes if n.kind == "module" for line in labels[f"n{n.id}"])
    tooltip = re.search(rf'  n{first.id} \[.*tooltip="([^"]*)"', dot)
    assert tooltip is not None and "scalar" not in tooltip.group(1) and "out (8, 8)" in tooltip.group(1)
    assert "model.0 Linear, 40 params, out (8, 8) (folded module)" in render_text(report)


@needs_renderer
@pytest.mark.parametrize("options", ["--depth 1", ""])
def test_every_drawing_shows_each_line_its_dot_label_says(ip: Any, options: str) -> None:
    report, _ = report_of(ip, TRAINING, options)
    dot = to_dot(report.graphs[0], facts_of(report))
    expected = _dot_labels(dot)
    svg = render_dot(dot).svg
    assert svg is not None
    view = AutogradView(report)
    static = view._repr_mimebundle_()[0]["text/html"]  # type: ignore[index]
    for drawing in (svg, view.drawings[0]["svg"], static):
        assert _svg_labels(drawing) == expected
    root = f"n{_root(report.graphs[0]).id}"
    assert expected[root][0] == "loss" and "grad = 1" in expected[root]
