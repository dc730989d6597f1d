"""The report the seed tutorial's cells produce: grad_fns, named graphs, gradients, schema."""

from __future__ import annotations

import json
from typing import Any

from conftest import report_of, run
from seed_cells import SEED_CELLS


def _graph_labels(report: Any) -> set[str]:
    return {n.label for g in report.graphs for n in g.nodes}


def _leaf_names(graph: Any) -> set[str]:
    return {n.name for n in graph.nodes if n.kind == "leaf"}


def _run_seed(ip: Any, upto: int) -> None:
    for number, source in SEED_CELLS.items():
        if number >= upto:
            return
        run(ip, source)


def test_seed_19_to_22_grad_fns_gradients_and_named_graph(ip: Any) -> None:
    _run_seed(ip, 19)
    rep19, _ = report_of(ip, SEED_CELLS[19])
    assert rep19.tensors["var1"].grad_fn == "MulBackward0" and rep19.tensors["var1"].line == 2
    assert rep19.tensors["var2"].grad_fn == "AddBackward0"
    rep20, _ = report_of(ip, SEED_CELLS[20])
    assert rep20.tensors["z"].grad_fn == "SubBackward0"
    rep21, _ = report_of(ip, SEED_CELLS[21])
    graph = rep21.graphs[0]
    assert graph.backward and graph.root == "z" and graph.line == 2
    assert _leaf_names(graph) == {"x", "y"}
    names = {n.name for n in graph.nodes}
    assert {"z", "var1", "var2"} <= names  # intermediates from earlier cells keep their names
    var1 = next(n for n in graph.nodes if n.name == "var1")
    assert (var1.line, var1.expr) == (2, "2*x") and var1.cell is not None  # ... and the line that made them
    assert rep21.gradients["x"].values == [-1.0] and rep21.gradients["y"].values == [1.0]
    rep22, _ = report_of(ip, SEED_CELLS[22])
    assert rep22.to_dict()["gradients"]["x"] == [-1.0]


def test_seed_23_24_graph_has_norm_mm_sin_pow_with_leaves_a_and_b(ip: Any) -> None:
    _run_seed(ip, 23)
    rep23, _ = report_of(ip, SEED_CELLS[23])
    assert {"LinalgVectorNormBackward0", "MmBackward0", "SinBackward0", "PowBackward0"} <= _graph_labels(rep23)
    rep24, _ = report_of(ip, SEED_CELLS[24])
    graph = rep24.graphs[0]
    assert graph.backward and graph.root == "c"
    assert {"LinalgVectorNormBackward0", "MmBackward0", "SinBackward0", "PowBackward0"} <= _graph_labels(rep24)
    assert _leaf_names(graph) == {"a", "b"}
    sin = next(n for n in graph.nodes if n.label == "SinBackward0")
    assert sin.line is None or sin.code.startswith("c = torch.norm")  # made in the previous cell
    assert rep24.gradients["a"].shape == (10, 3) and rep24.gradients["b"].shape == (3, 5)


def test_nodes_carry_the_line_and_expression_that_made_them(ip: Any) -> None:
    report, _ = report_of(ip, "a = torch.rand(10,3, requires_grad = True)\nb = torch.rand(3,5, requires_grad=True)\n"
                              "c = torch.norm(torch.sin(a) @ torch.pow(b,2))\nc.backward()")
    nodes = {n.label: n for n in report.graphs[0].nodes}
    assert nodes["SinBackward0"].line == 3 and nodes["SinBackward0"].expr == "torch.sin(a)"
    assert nodes["PowBackward0"].expr == "torch.pow(b,2)"
    assert nodes["MmBackward0"].expr == "torch.sin(a) @ torch.pow(b,2)"
    assert nodes["LinalgVectorNormBackward0"].name == "c"


def test_rebinding_keeps_both_versions_apart(ip: Any) -> None:
    report, _ = report_of(ip, "a = torch.ones(2, requires_grad=True)\nb = a * 2\nb = b * 3\nb.sum().backward()")
    names = {n.name for n in report.graphs[0].nodes}
    assert "b" in names and "b (line 2)" in names  # the body's line, as a traceback counts


def test_intermediate_gradients_are_captured_without_retain_grad(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.tensor([2.], requires_grad=True)\nh = x * 3\ny = h ** 2\ny.backward()")
    assert report.gradients["h"].values == [12.0] and report.gradients["h"].source == "hook"
    assert ip.user_ns["h"].retains_grad is False


def test_module_parameters_are_named_by_qualified_name(ip: Any) -> None:
    report, _ = report_of(ip, "torch.manual_seed(0)\nmodel = torch.nn.Sequential(torch.nn.Linear(3, 2))\n"
                              "loss = model(torch.ones(1, 3)).sum()\nloss.backward()")
    leaves = _leaf_names(report.graphs[0])
    assert {"model.0.weight", "model.0.bias"} <= leaves
    assert "model.0.weight" in report.gradients


def test_accumulated_gradient_shows_before_and_after(ip: Any) -> None:
    run(ip, "w = torch.ones(2, requires_grad=True)\n(w * 2).sum().backward()")
    report, _ = report_of(ip, "(w * 3).sum().backward()")
    assert report.gradients["w"].before == [2.0, 2.0] and report.gradients["w"].values == [5.0, 5.0]


def test_loop_is_folded_and_counted(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.ones(2, requires_grad=True)\nt = x\nfor i in range(500):\n"
                              "    t = t * 1.001\nt.sum().backward()")
    graph = report.graphs[0]
    assert len(graph.nodes) < 20 and any(n.repeat >= 100 for n in graph.nodes)
    assert report.ops_total >= 500 and report.ops_folded > 0


def test_to_dict_has_the_documented_schema(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.tensor([5.], requires_grad=True)\nz = x * x\nz.backward()\nv = z.item()")
    data = json.loads(report.to_json())
    assert set(data) >= {"diagnostics", "tensors", "gradients", "graphs", "ops", "error"}
    assert data["tensors"]["x"] == {"shape": [1], "dtype": "float32", "device": "cpu", "requires_grad": True,
                                   "is_leaf": True, "grad_fn": None, "line": 1, "kind": "tensor"}
    graph = data["graphs"][0]
    assert {"root", "nodes", "edges"} <= set(graph)
    assert {"id", "label", "name", "line", "code", "shape"} <= set(graph["nodes"][0])
    assert all(len(e) == 2 for e in graph["edges"])
    assert {"name", "line", "code", "inplace"} <= set(data["ops"][0])
    for diag in data["diagnostics"]:
        assert {"kind", "severity", "line", "code", "names", "message"} <= set(diag)


def test_node_ids_are_deterministic(ip: Any) -> None:
    body = "x = torch.ones(2, requires_grad=True)\ny = (x * 2).sin()\ny.sum().backward()"
    first, _ = report_of(ip, body)
    second, _ = report_of(ip, body)
    assert first.to_dict()["graphs"] == second.to_dict()["graphs"]


def test_save_writes_json_html_and_svg(ip: Any, tmp_path: Any) -> None:
    report, _ = report_of(ip, "x = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()")
    assert json.loads(report.save(tmp_path / "r.json").read_text())["gradients"]["x"] == [2.0, 2.0]
    assert "<table" in report.save(tmp_path / "r.html").read_text()
    assert (tmp_path / "r.svg") == report.save(tmp_path / "r.svg")
    assert "<svg" in (tmp_path / "r.svg").read_text()


def test_torchviz_option_draws_before_backward_frees_the_graph(ip: Any) -> None:
    report, cell = report_of(ip, "x = torch.ones(2, requires_grad=True)\ny = (x * 2).sin().sum()\ny.backward()",
                             options="--torchviz")
    assert cell.error is None
    dot = report.torchviz_dot
    assert dot is not None and dot.startswith("digraph")
    assert "SinBackward0" in dot and "x\n (2)" in dot  # the leaf is labelled with its name by torchviz
    plain, _ = report_of(ip, "z = torch.ones(2, requires_grad=True) * 2")
    assert plain.torchviz_dot is None  # only when asked: it costs a second graph walk


def test_a_named_view_shows_its_base_as_in_torchviz(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.ones(4, 3, requires_grad=True)\nh = x * 2\nv = h[:, :2]\nv.sum().backward()")
    graph = report.graphs[0]
    base = next(n for n in graph.nodes if n.kind == "base")
    view = next(n for n in graph.nodes if n.name == "v")
    assert base.name == "h" and base.shape == (4, 3)
    assert (base.id, view.id) in graph.edges


def test_ops_inside_a_library_call_do_not_take_the_statement_name(ip: Any) -> None:
    report, _ = report_of(ip, "G = torch.nn.Linear(2, 4)\nout = G(torch.ones(1, 2)).sum()\nout.backward()")
    leaves = {n.name for n in report.graphs[0].nodes if n.kind == "leaf"}
    assert leaves == {"G.weight", "G.bias"}


def test_inplace_keyword_marks_the_op_inplace(ip: Any) -> None:
    report, _ = report_of(ip, "h = torch.randn(3)\nr = torch.nn.functional.relu(h, inplace=True)")
    relu = next(op for op in report.ops if op.name == "relu")
    assert relu.inplace
