"""Modules as clusters (issue 13.1): each graph node knows the nn.Module whose forward made it,
each graph lists its modules, the static views draw them as nested clusters, and --depth folds
deeper modules into one node. Found from the stack, never with module hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_widget
from conftest import report_of, run
from test_widget import open_view

from autograd_magic.analysis.modules import fold_modules, with_modules
from autograd_magic.report.model import Graph, Node
from autograd_magic.views.graph import to_dot
from autograd_magic.views.widget import AutogradView

browser_page = test_widget.browser_page  # the chromium page fixture, shared
SETUP = "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"

MODELS: dict[str, tuple[str, set[str]]] = {
    "MLP": ("model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))\n"
            "loss = model(torch.randn(3, 4)).sum()\nloss.backward()",
            {"model.0", "model.1", "model.2"}),
    "CNN": ("model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),\n"
            "                      nn.Flatten(), nn.Linear(4 * 3 * 3, 2))\n"
            "loss = model(torch.randn(2, 1, 8, 8)).sum()\nloss.backward()",
            {"model.0", "model.1", "model.2", "model.3", "model.4", "model.5"}),
    "LSTM": ("class Net(nn.Module):\n"
             "    def __init__(self):\n"
             "        super().__init__()\n"
             "        self.rnn = nn.LSTM(4, 8, batch_first=True)\n"
             "        self.head = nn.Linear(8, 1)\n"
             "    def forward(self, x):\n"
             "        out, _ = self.rnn(x)\n"
             "        return self.head(out[:, -1])\n"
             "net = Net()\nloss = net(torch.randn(2, 5, 4)).sum()\nloss.backward()",
             {"net.rnn", "net.head"}),
    "TransformerEncoder": ("enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2)\n"
                           "loss = enc(torch.randn(2, 5, 16)).sum()\nloss.backward()",
                           {"enc.layers.0.self_attn", "enc.layers.0.linear1", "enc.layers.1.norm2",
                            "enc.layers.0", "enc.layers.1"}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_nodes_belong_to_the_module_whose_forward_made_them(ip: Any, name: str) -> None:
    body, expected = MODELS[name]
    report, cell = report_of(ip, SETUP + body)
    assert cell.error is None
    graph = report.graphs[0]
    placed = {n.module for n in graph.nodes if n.module}
    assert expected <= placed
    rows = {m.name: m for m in graph.modules}
    assert expected <= set(rows)
    for row in rows.values():  # every listed module's parent is listed, and its nodes say they are in it
        assert row.parent is None or row.parent in rows
        assert all(next(n for n in graph.nodes if n.id == i).module == row.name for i in row.nodes)
    loss = next(n for n in graph.nodes if n.kind == "root")
    assert loss.module is None  # made by the cell, outside any module


def test_parameters_sit_in_their_modules_cluster(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + MODELS["MLP"][0])
    graph = report.graphs[0]
    leaf = next(n for n in graph.nodes if n.name == "model.2.weight")
    assert leaf.module == "model.2"
    assert next(m for m in graph.modules if m.name == "model.2").cls == "Linear"
    assert report.to_dict()["graphs"][0]["modules"][0]["name"] == "model"


def test_the_transformer_layers_are_kept_apart_not_folded_together(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + MODELS["TransformerEncoder"][0])
    graph = report.graphs[0]
    per_layer = {i: sum(1 for n in graph.nodes if (n.module or "").startswith(f"enc.layers.{i}")) for i in (0, 1)}
    assert per_layer[0] > 50 and per_layer[1] > 50  # layer 0 has a few less: its input needs no gradient


def test_static_graph_draws_nested_clusters(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + MODELS["MLP"][0])
    dot = to_dot(report.graphs[0])
    assert 'subgraph "cluster_m0" {' in dot and 'label="model (Sequential)"' in dot
    assert dot.index('label="model (Sequential)"') < dot.index('label="model.0 (Linear)"')


def test_depth_folds_deeper_modules_into_one_node_each(ip: Any) -> None:
    body = MODELS["TransformerEncoder"][0]
    full, _ = report_of(ip, SETUP + body)
    folded, _ = report_of(ip, SETUP + body, "--depth 2")
    graph = folded.graphs[0]
    modules = [n for n in graph.nodes if n.kind == "module"]
    assert sorted(n.name for n in modules) == ["enc.layers.0", "enc.layers.1"]
    assert {n.label for n in modules} == {"TransformerEncoderLayer"}
    assert len(graph.nodes) < len(full.graphs[0].nodes) / 5
    assert [m.name for m in graph.modules] == ["enc", "enc.layers"]
    assert 'label="enc.layers (ModuleList)"' in to_dot(graph)


def test_depth_comes_from_config_too(ip: Any) -> None:
    run(ip, "%config AutogradMagic.depth = 0")
    try:
        report, _ = report_of(ip, SETUP + MODELS["MLP"][0])
    finally:
        run(ip, "%config AutogradMagic.depth = None")
    assert [n.name for n in report.graphs[0].nodes if n.kind == "module"] == ["model"]


def test_a_negative_depth_is_a_usage_error(ip: Any) -> None:
    cell = run(ip, "%%autograd --depth -1\nx = 1")
    assert type(cell.error).__name__ == "UsageError"


def test_fold_modules_rewires_edges_and_drops_internal_ones() -> None:
    nodes = [Node(1, "AddBackward0", "loss", 3, "", (), "root"),
             Node(2, "AddmmBackward0", None, 2, "", (), "op", module="m.0"),
             Node(3, "AccumulateGrad", "m.0.weight", None, "", (), "leaf", module="m.0"),
             Node(4, "ReluBackward0", None, 2, "", (), "op", module="m")]
    folded, edges = fold_modules(nodes, [(3, 2), (2, 4), (4, 1)], 1, {"m": "Net", "m.0": "Linear"})
    assert [(n.id, n.kind, n.label) for n in folded] == [(1, "root", "AddBackward0"), (-1, "module", "Linear"),
                                                         (4, "op", "ReluBackward0")]
    assert edges == [(-1, 4), (4, 1)]
    graph = with_modules(Graph(None, tuple(folded), tuple(edges)), {"m": "Net", "m.0": "Linear"})
    assert [(m.name, m.nodes) for m in graph.modules] == [("m", (-1, 4))]  # a folded module sits in its parent


# -- invisibility: found from the stack, no hooks ----------------------------------------------------------
HOOKED = """
calls = []
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
model[0].register_forward_hook(lambda m, i, o: calls.append("fwd"))
model[2].register_forward_pre_hook(lambda m, i: calls.append("pre"))
"""


def test_module_hooks_and_hook_dicts_are_the_same_plain_and_recorded(ip: Any) -> None:
    seen = []
    for prefix in ("", "%%autograd -q\n"):
        ip.reset(new_session=False)
        assert run(ip, SETUP + HOOKED).error is None
        assert run(ip, prefix + "for i in range(12):\n    model(torch.randn(2, 4)).sum().backward()").error is None
        seen.append(ip.ev("(len(calls), [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)"
                          " for m in model.modules()], len(nn.modules.module._global_forward_hooks),"
                          " len(nn.modules.module._global_forward_pre_hooks))"))
    assert seen[0] == seen[1] and seen[0][0] == 24


@pytest.mark.browser
def test_browser_widget_draws_module_boxes_and_folded_modules(ip: Any, browser_page: Any, tmp_path: Path) -> None:
    report, _ = report_of(ip, SETUP + MODELS["TransformerEncoder"][0], "--depth 2")
    page = browser_page
    open_view(page, AutogradView(report, tab="graph"), tmp_path)
    boxes = page.eval_on_selector_all("svg g.cluster", "els => els.map(e => e.textContent.trim())")
    assert any("enc (TransformerEncoder)" in b for b in boxes) and any("enc.layers (ModuleList)" in b for b in boxes)
    folded = next(n for n in report.graphs[0].nodes if n.kind == "module")
    page.click(f'g.node[id="n{folded.id}"]')
    assert "TransformerEncoderLayer" in page.inner_text("aside.agm-details")
    assert page.agm_errors == []


# -- repeated blocks ×N and folding to fit --max-nodes -----------------------------------------------------
SIX_LAYERS = ("enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 6,\n"
              "                            enable_nested_tensor=False)\n"
              "loss = enc(torch.randn(2, 5, 16)).sum()\nloss.backward()")
DEEP_MLP = ("model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(30)])\n"
            "loss = model(torch.randn(4, 8)).sum()\nloss.backward()")


def test_transformer_layers_fold_into_one_block_times_six_instead_of_dropping(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + SIX_LAYERS)
    graph = report.graphs[0]
    assert graph.dropped == 0 and len(graph.nodes) <= 150
    block = next(m for m in graph.modules if m.repeat > 1)
    assert (block.repeat, block.label, block.cls) == (6, "enc.layers.0–5", "TransformerEncoderLayer")
    assert "enc.layers.0–5 (TransformerEncoderLayer) ×6" in to_dot(graph)
    assert not any((n.module or "").startswith("enc.layers.2") for n in graph.nodes)  # drawn once, as layer 5
    assert any(n.repeat == 6 and n.label == "AddmmBackward0" for n in graph.nodes)


def test_a_small_graph_keeps_its_layers_apart(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + SIX_LAYERS, "--max-nodes 1000")
    graph = report.graphs[0]
    assert all(m.repeat == 1 for m in graph.modules) and graph.dropped == 0
    assert {f"enc.layers.{i}" for i in range(6)} <= {m.name for m in graph.modules}


@pytest.mark.parametrize("name", ["MLP", "CNN", "LSTM", "TransformerEncoder"])
def test_a_tight_budget_folds_modules_rather_than_dropping_nodes(ip: Any, name: str) -> None:
    report, _ = report_of(ip, SETUP + MODELS[name][0], "--max-nodes 8")
    graph = report.graphs[0]
    assert len(graph.nodes) <= 8 and graph.dropped == 0
    assert any(n.kind == "module" for n in graph.nodes)


def test_a_sequential_of_identical_blocks_folds_times_n(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + DEEP_MLP, "--max-nodes 40")
    graph = report.graphs[0]
    assert graph.dropped == 0 and len(graph.nodes) <= 40
    assert any(m.repeat >= 2 and m.cls == "Sequential" for m in graph.modules) or \
        any(n.repeat >= 2 and n.kind == "module" for n in graph.nodes)


def test_a_module_applied_several_times_is_one_block(ip: Any) -> None:
    body = ("block = nn.Sequential(nn.Linear(4, 4), nn.Tanh())\nx = torch.randn(2, 4)\n"
            "for _ in range(5):\n    x = block(x)\nloss = x.sum()\nloss.backward()")
    report, _ = report_of(ip, SETUP + body, "--max-nodes 12")
    graph = report.graphs[0]
    assert graph.dropped == 0 and len(graph.nodes) <= 12
    assert any(n.repeat == 5 for n in graph.nodes)
    assert [(count, label) for _, count, label in graph.repeated] == [(5, "block.0, its ops ran 5 times")]


# -- unfold and fold on click --------------------------------------------------------------------------
def _shown_widget(ip: Any, monkeypatch: Any, body: str, options: str) -> AutogradView:
    import autograd_magic.magic as magic

    shown: dict[str, Any] = {}
    monkeypatch.setattr(magic, "show_report", lambda report, **kw: shown.update(report=report, **kw))
    run(ip, f"%%autograd {options}\n{body}")
    return AutogradView(shown["report"], shown["refold"], tab="graph")


def test_a_click_request_unfolds_and_folds_a_module(ip: Any, monkeypatch: Any) -> None:
    view = _shown_widget(ip, monkeypatch, SETUP + MODELS["TransformerEncoder"][0], "--depth 2")
    before = len(view.report["graphs"][0]["nodes"])
    view.fold_request = {"graph": 0, "module": "enc.layers.1", "open": True, "n": 1}
    unfolded = view.source_report.graphs[0]
    assert len(unfolded.nodes) > before + 20
    assert "enc.layers.1" in {m.name for m in unfolded.modules}
    assert [n.name for n in unfolded.nodes if n.kind == "module"] == ["enc.layers.0"]
    view.fold_request = {"graph": 0, "module": "enc.layers.1", "open": False, "n": 2}
    assert len(view.report["graphs"][0]["nodes"]) == before


@pytest.mark.browser
def test_browser_click_unfolds_a_module_and_its_box_folds_it_back(ip: Any, monkeypatch: Any, browser_page: Any,
                                                                   tmp_path: Path) -> None:
    view = _shown_widget(ip, monkeypatch, SETUP + MODELS["TransformerEncoder"][0], "--depth 2")
    page = browser_page
    open_view(page, view, tmp_path)

    def answer() -> None:  # what the kernel does: the request reaches Python, the new report comes back
        view.fold_request = page.evaluate("window.agmData.fold_request")
        page.evaluate("([d, r]) => { window.agmModel.set('drawings', d); window.agmModel.set('report', r); }",
                      [view.drawings, view.report])

    drawn = lambda: page.eval_on_selector_all("div.agm-scroll svg g.node", "els => els.length")  # noqa: E731
    before = drawn()
    folded = next(n for n in view.source_report.graphs[0].nodes if n.kind == "module" and n.name == "enc.layers.1")
    page.click(f'g.node[id="n{folded.id}"]')
    assert "unfolding enc.layers.1" in page.inner_text("div.agm-graph-title")
    answer()
    opened = drawn()
    assert opened > before + 20
    for theme, name in (("light", "light-modules.png"), ("dark", "dark-modules.png")):
        _screenshot(page, theme, name)
    index = [m.name for m in view.source_report.graphs[0].modules].index("enc.layers.1")
    box = page.locator(f'g.cluster[id="m{index}"]')
    assert box.get_attribute("aria-label") == "fold enc.layers.1 into one node"
    page.evaluate(f"document.querySelector('g.cluster[id=\"m{index}\"]').dispatchEvent(new MouseEvent('click'))")
    answer()
    assert drawn() == before
    assert page.agm_errors == []


def _screenshot(page: Any, theme: str, name: str) -> None:
    artifacts = Path(__file__).parent.parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    dark = theme == "dark"
    page.evaluate("""dark => {
      const s = document.body.style;
      for (const [k, v] of Object.entries(dark ? {"--jp-layout-color0": "#111", "--jp-layout-color1": "#111",
          "--jp-layout-color2": "#333", "--jp-ui-font-color1": "#eee", "--jp-content-font-color1": "#eee",
          "--jp-border-color2": "#555", "--jp-ui-font-color2": "#bbb"} : {})) s.setProperty(k, v);
      s.background = dark ? "#111" : "#fff"; s.color = dark ? "#eee" : "#000";
    }""", dark)
    page.screenshot(path=str(artifacts / name), full_page=True)
