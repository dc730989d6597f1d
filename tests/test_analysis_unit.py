"""The checks on hand-built traces: no shell, no tensors, each rule pinned down on its own.

Line numbers follow the editor: the ``%%autograd`` line is 1, so ``SRC``'s first line is 2.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import report_of

from autograd_magic.analysis import CHECKS, analyze
from autograd_magic.analysis.build import per_site
from autograd_magic.analysis.lineage import base_name, show, written
from autograd_magic.analysis.naming import name_tensors
from autograd_magic.analysis.source import assigned_name, assigned_value, grad_context, loop_names, tainted_names
from autograd_magic.report.model import Diagnostic
from autograd_magic.trace.events import (
    BackwardEvent,
    Binding,
    ErrorInfo,
    GradEvent,
    GraphNode,
    GraphSnapshot,
    OpEvent,
    Site,
    TensorInfo,
    Trace,
)


# -- builders ------------------------------------------------------------------------------
def t(tid: int, *, grad: bool = False, leaf: bool = True, fn: str | None = None, mem: int | None = None,
      kind: str = "tensor", shape: tuple[int, ...] = (3,), version: int = 0, node: int | None = None) -> TensorInfo:
    memory = None if mem is None else (mem, mem + 12)
    return TensorInfo(tid, kind, shape, "float32", "cpu", grad, leaf, fn, node, memory, version)


class Cell:
    """A cell's source and the events its lines produced, numbered as capture numbers them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.splitlines()
        self.ops: list[OpEvent] = []
        self.backwards: list[BackwardEvent] = []
        self.bindings: list[Binding] = []

    def site(self, line: int, expr: str = "") -> Site:
        return Site(line, self.lines[line - 2].strip(), expr)

    def op(self, func: str, line: int, expr: str = "", ins: tuple[TensorInfo, ...] = (),
           outs: tuple[TensorInfo, ...] = (), **kw: Any) -> OpEvent:
        event = OpEvent(len(self.ops) + 1, func, self.site(line, expr), ins, outs, **kw)
        self.ops.append(event)
        if event.target and outs:
            self.bindings.append(Binding(event.target, outs[0].tid, event.seq, line))
        return event

    def backward(self, line: int, root: TensorInfo, *, error: str | None = None, leaves: tuple[GradEvent, ...] = (),
                 nodes: tuple[GraphNode, ...] = (), func: str = "backward", **kw: Any) -> BackwardEvent:
        expr = self.lines[line - 2].strip()
        seq = self.op(func, line, expr, (root,)).seq
        graph = GraphSnapshot(root.tid, nodes, ()) if nodes else None
        event = BackwardEvent(seq, func, self.site(line, expr), root, graph, leaf_grads=leaves, error=error, **kw)
        self.backwards.append(event)
        return event

    def trace(self, final: dict[str, TensorInfo], *, error: ErrorInfo | None = None,
              previous: dict[str, TensorInfo] | None = None, **kw: Any) -> Trace:
        end = len(self.ops) + 1
        bindings = self.bindings + [Binding(n, i.tid, end) for n, i in final.items()]
        return Trace(source=self.source, ops=tuple(self.ops), backwards=tuple(self.backwards),
                     bindings=tuple(bindings), final=final, error=error, previous=previous or {}, **kw)


def diagnostics(trace: Trace) -> list[Diagnostic]:
    return analyze(trace, name_tensors(trace))


def loud(trace: Trace) -> list[tuple[str, str, int | None, tuple[str, ...]]]:
    return [(d.kind, d.severity, d.line, d.names) for d in diagnostics(trace) if d.severity != "note"]


# -- the registry ---------------------------------------------------------------------------
def test_every_kind_of_the_issue_is_registered() -> None:
    assert set(CHECKS) == {
        "alias-write", "shared-memory", "graph-break", "no-gradient", "backward-no-grad-fn", "backward-twice",
        "backward-non-scalar", "inplace-saved-tensor", "saved-tensor-mutated", "leaf-inplace", "nonleaf-grad",
        "grad-accumulated", "grad-summed", "requires-grad-int", "numpy-requires-grad", "requires-grad-nonleaf",
        "history-growing", "eval-keeps-grad",
        "exception", "exploding-gradients", "vanishing-gradients", "never-gets-gradient", "constant-loss",
        "gradcheck", "non-finite", "backward-memory"}


def test_a_specific_error_replaces_the_generic_exception_and_errors_come_first() -> None:
    cell = Cell("x = torch.ones(3, requires_grad=True)\nz = x\nz[0] = 5\nx.add_(1)\n")
    x = t(1, grad=True, mem=100)
    cell.op("ones", 2, "torch.ones(3, requires_grad=True)", outs=(x,), target="x")
    error = "RuntimeError: a leaf Variable that requires grad is being used in an in-place operation."
    cell.op("add_", 5, "x.add_(1)", (x,), inplace=True, error=error)
    trace = cell.trace({"x": x, "z": x}, error=ErrorInfo("RuntimeError", error.split(": ", 1)[1], cell.site(5)))
    kinds = [d.kind for d in diagnostics(trace)]
    assert kinds == ["leaf-inplace"]


def test_a_failing_check_costs_only_its_own_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    import autograd_magic.internal as internal

    def broken(trace: Trace, names: Any) -> list[Diagnostic]:
        raise RuntimeError("bug")

    monkeypatch.setattr(internal, "RAISE", False)
    monkeypatch.setitem(CHECKS, "alias-write", broken)
    cell = Cell("x = torch.ones(3)\ny = x @ w\n")
    trace = cell.trace({"x": t(1)}, error=ErrorInfo("RuntimeError", "size mismatch", cell.site(3)))
    assert [d.kind for d in diagnostics(trace)] == ["exception"]
    assert internal.take_failures() == ["checking for alias-write"]


def test_one_finding_per_kind_line_and_names_in_a_loop() -> None:
    cell = Cell("x = torch.zeros(3)\nz = x\nfor i in range(3):\n    z[i] = 1\n")
    x = t(1, mem=100)
    cell.op("zeros", 2, outs=(x,), target="x")
    for _ in range(3):
        cell.op("__setitem__", 5, "z[i]", (x,), inplace=True)
    assert loud(cell.trace({"x": x, "z": x})) == [("alias-write", "warning", 5, ("z", "x"))]


# -- alias-write -----------------------------------------------------------------------------------
def test_alias_write_ignores_loop_variables_and_module_names() -> None:
    cell = Cell("params = [w]\nfor p in params:\n    p -= 1\n")
    w = t(1, mem=100)
    cell.op("sub_", 4, "p -= 1", (w,), inplace=True, target="p")
    cell.bindings.append(Binding("model.weight", 1, 9, None, qualified=True))  # found by the module scan
    assert loud(cell.trace({"w": w, "p": w, "model.weight": w})) == []


def test_alias_write_does_not_trust_memory_that_may_have_been_reused() -> None:
    cell = Cell("t = torch.zeros(3)\nt.add_(1)\ndel t\na = np.zeros(3)\n")
    tmp = t(1, mem=100)
    cell.op("zeros", 2, outs=(tmp,), target="t")
    cell.op("add_", 3, "t.add_(1)", (tmp,), inplace=True)
    assert loud(cell.trace({"a": t(2, kind="ndarray", mem=100)})) == []


def test_alias_write_keeps_a_name_bound_by_the_writing_statement_out() -> None:
    cell = Cell("x = torch.zeros(3)\ny = x.add_(1)\n")
    x = t(1, mem=100)
    cell.op("zeros", 2, outs=(x,), target="x")
    cell.op("add_", 3, "x.add_(1)", (x,), (x,), inplace=True, target="y")
    assert loud(cell.trace({"x": x, "y": x})) == []


# -- graph-break and no-gradient ---------------------------------------------------------------------
def _cut_cell(source: str, cut_func: str, cut_expr: str) -> tuple[Cell, TensorInfo, TensorInfo]:
    cell = Cell(source)
    w, u = t(1, grad=True), t(2, grad=True)
    cell.op("ones", 2, outs=(w,), target="w")
    cell.op("ones", 3, outs=(u,), target="u")
    y = t(3, grad=True, leaf=False, fn="MulBackward0")
    cell.op("mul", 4, "w * 2", (w,), (y,), target="y")
    cut = t(4, kind="ndarray" if cut_func == "numpy" else "tensor")
    cell.op(cut_func, 5, cut_expr, (y,), (cut,), target="p")
    back = t(5)
    if cut_func == "numpy":
        cell.op("tensor", 6, "torch.tensor(p)", (cut,), (back,))
    else:
        back = cut
    loss = t(6, grad=True, leaf=False, fn="SumBackward0")
    cell.op("mul", 6, "torch.tensor(p) * u", (back, u), (loss,), target="loss")
    reached = (GraphNode(9, "AccumulateGrad", 2),)
    cell.backward(7, loss, leaves=(GradEvent(2, False, False),), nodes=reached)
    return cell, w, loss


SRC_CUT = ("w = torch.ones(3, requires_grad=True)\nu = torch.ones(3, requires_grad=True)\ny = w * 2\n"
           "p = {}\nloss = ({} * u).sum()\nloss.backward()\n")


def test_a_conversion_that_feeds_backward_is_a_warning_naming_the_lost_leaf() -> None:
    cell, w, loss = _cut_cell(SRC_CUT.format("y.detach().numpy()", "torch.tensor(p)"), "numpy", "y.detach().numpy()")
    found = [d for d in diagnostics(cell.trace({"w": w, "loss": loss})) if d.kind == "graph-break"]
    assert [(d.severity, d.line) for d in found] == [("warning", 5)]
    assert "w" in found[0].names and "line 7" in found[0].message


def test_an_explicit_detach_that_stays_a_tensor_is_an_intended_stop() -> None:
    cell, w, loss = _cut_cell(SRC_CUT.format("y.detach()", "p"), "detach", "y.detach()")
    found = diagnostics(cell.trace({"w": w, "loss": loss}))
    assert [(d.kind, d.severity) for d in found] == [("graph-break", "note")]
    assert "remove the cut if they should train" in found[0].message


def test_a_detach_inside_a_library_call_is_not_the_users_cut() -> None:
    cell, w, loss = _cut_cell(SRC_CUT.format("model(y)", "p"), "detach", "model(y)")
    assert [d for d in diagnostics(cell.trace({"w": w, "loss": loss})) if d.kind == "graph-break"] == []


def test_no_gradient_follows_the_value_through_plain_python_names() -> None:
    source = ("w = torch.ones(3, requires_grad=True)\ns = (w * 2).sum().item()\nm = s * 3\n"
              "loss = torch.tensor(m, requires_grad=True)\nloss.backward()\n")
    cell = Cell(source)
    w = t(1, grad=True)
    cell.op("ones", 2, outs=(w,), target="w")
    y = t(2, grad=True, leaf=False, fn="SumBackward0")
    cell.op("sum", 3, "(w * 2).sum()", (w,), (y,), target="s")
    cell.op("item", 3, "(w * 2).sum().item()", (y,), (), target="s")
    loss = t(3, grad=True)
    cell.op("tensor", 5, "torch.tensor(m, requires_grad=True)", (), (loss,), target="loss")
    cell.backward(6, loss, leaves=(GradEvent(3, False, False),), nodes=(GraphNode(9, "AccumulateGrad", 3),))
    assert loud(cell.trace({"w": w, "loss": loss})) == [("no-gradient", "warning", 3, ("w",))]


# -- history-growing ------------------------------------------------------------------------------
def _growing(source: str, resets: set[int], backward_inside: bool = True) -> Trace:
    cell = Cell(source)
    x = t(1, grad=True)
    cell.op("ones", 2, outs=(x,), target="x")
    total: TensorInfo | None = None
    for i in range(4):
        loss = t(10 + i, grad=True, leaf=False, fn="SumBackward0")
        cell.op("sum", 4, "(x * 2).sum()", (x,), (loss,), target="loss")
        if backward_inside:
            cell.backward(5, loss)
        new = t(20 + i, grad=True, leaf=False, fn="AddBackward0")
        ins = (loss,) if total is None or i in resets else (total, loss)
        cell.op("add", 6, "total + loss", ins, (new,), target="total")
        total = new
    assert total is not None
    return cell.trace({"x": x, "total": total})


SRC_GROW = ("x = torch.ones(3, requires_grad=True)\nfor i in range(4):\n    loss = (x * 2).sum()\n"
            "    loss.backward()\n    total = total + loss\n")


def test_history_growing_needs_a_backward_inside_the_loop() -> None:
    assert loud(_growing(SRC_GROW, set())) == [("history-growing", "warning", 6, ("total",))]
    assert loud(_growing(SRC_GROW, set(), backward_inside=False)) == []


def test_history_growing_needs_an_unbroken_chain() -> None:
    assert loud(_growing(SRC_GROW, {2})) == []


# -- grad-accumulated --------------------------------------------------------------------------------
SRC_ACC = ("w = torch.ones(3, requires_grad=True)\nfor i in range(2):\n    loss = (w * 2).sum()\n"
           "    loss.backward()\n    w.grad\n")


def _accumulating(*, used: bool, cleared: bool = False) -> Trace:
    cell = Cell(SRC_ACC)
    w = t(1, grad=True)
    cell.op("ones", 2, outs=(w,), target="w")
    for i in range(2):
        loss = t(10 + i, grad=True, leaf=False, fn="SumBackward0")
        cell.op("sum", 4, "(w * 2).sum()", (w,), (loss,), target="loss")
        cell.backward(5, loss, leaves=(GradEvent(1, i > 0 and not cleared, False),))
        if used:
            cell.op("grad.__get__", 6, "w.grad", (w,), (t(30 + i),))
    return cell.trace({"w": w})


def test_grad_accumulated_when_the_gradient_was_used_between_passes() -> None:
    assert loud(_accumulating(used=True)) == [("grad-accumulated", "warning", 5, ("w",))]


def test_accumulating_on_purpose_before_one_step_is_fine() -> None:
    assert loud(_accumulating(used=False)) == []
    assert loud(_accumulating(used=True, cleared=True)) == []


def test_grad_accumulated_across_runs_trusts_the_recorded_history() -> None:
    cell = Cell("loss = (w * 2).sum()\nloss.backward()\n")
    w, loss = t(1, grad=True), t(2, grad=True, leaf=False, fn="SumBackward0")
    cell.op("sum", 2, "(w * 2).sum()", (w,), (loss,), target="loss")
    cell.backward(3, loss, leaves=(GradEvent(1, True, True),))
    assert loud(cell.trace({"w": w, "loss": loss})) == [("grad-accumulated", "warning", 3, ("w",))]


# -- backward-twice ------------------------------------------------------------------------------
@pytest.mark.parametrize("retain, had, expected", [(False, True, 1), (True, True, 0), (False, False, 0)])
def test_silent_second_backward_warns_only_when_grad_doubled(retain: bool, had: bool, expected: int) -> None:
    cell = Cell("y = (x + 1).sum()\ny.backward()\ny.backward()\n")
    x, y = t(1, grad=True), t(2, grad=True, leaf=False, fn="SumBackward0")
    cell.op("sum", 2, "(x + 1).sum()", (x,), (y,), target="y")
    cell.backward(3, y, leaves=(GradEvent(1, False, False),), retain_graph=retain)
    cell.backward(4, y, leaves=(GradEvent(1, had, False),))
    assert len([d for d in loud(cell.trace({"x": x, "y": y})) if d[0] == "backward-twice"]) == expected


# -- errors -----------------------------------------------------------------------------------------
def test_an_error_the_cell_caught_is_not_reported() -> None:
    cell = Cell("try:\n    x.numpy()\nexcept RuntimeError:\n    pass\n")
    x = t(1, grad=True)
    cell.op("numpy", 3, "x.numpy()", (x,), error="RuntimeError: Can't call numpy() on Tensor that requires grad.")
    assert diagnostics(cell.trace({"x": x})) == []


def test_inplace_saved_tensor_takes_the_saver_from_the_node_in_the_error() -> None:
    cell = Cell("y = x.sigmoid()\ny.mul_(2)\ny.sum().backward()\n")
    x = t(1, grad=True)
    y0 = t(2, grad=True, leaf=False, fn="SigmoidBackward0", shape=(2,))
    cell.op("sigmoid", 2, "x.sigmoid()", (x,), (y0,), target="y")
    y1 = t(2, grad=True, leaf=False, fn="MulBackward0", shape=(2,), version=1)
    cell.op("mul_", 3, "y.mul_(2)", (y1,), (y1,), inplace=True)
    error = ("RuntimeError: one of the variables needed for gradient computation has been modified by an inplace "
             "operation: [torch.FloatTensor [2]], which is output 0 of SigmoidBackward0, is at version 1; "
             "expected version 0 instead.")
    cell.backward(4, t(3, grad=True, leaf=False, fn="SumBackward0"), error=error)
    trace = cell.trace({"x": x, "y": y1}, error=ErrorInfo("RuntimeError", error.split(": ", 1)[1], cell.site(4)))
    (d,) = diagnostics(trace)
    assert (d.kind, d.line, d.names) == ("inplace-saved-tensor", 3, ("y",))
    assert "line 2" in d.message and "version 0" in d.message and "version 1" in d.message
    assert "`y = y.mul(2)`" in d.message


def test_backward_no_grad_fn_follows_provenance_into_an_earlier_cell() -> None:
    cell = Cell("b.backward()\n")
    b = t(7)
    made_at = Site(3, "b = torch.tensor(b.detach().numpy())", "", cell=5)
    old, detached, arr = t(-1, grad=True, leaf=False, fn="PowBackward0"), t(-2), t(-3, kind="ndarray")
    chain = (OpEvent(3, "tensor", Site(3, made_at.code, "torch.tensor(b.detach().numpy())", 5), (arr,), (b,),
                     target="b"),
             OpEvent(2, "numpy", Site(3, made_at.code, "b.detach().numpy()", 5), (detached,), (arr,), target="b"),
             OpEvent(1, "detach", Site(3, made_at.code, "b.detach()", 5), (old,), (detached,), target="b"))
    error = "RuntimeError: element 0 of tensors does not require grad and does not have a grad_fn"
    cell.backward(2, b, error=error)
    trace = cell.trace({"b": b}, error=ErrorInfo("RuntimeError", error.split(": ", 1)[1], cell.site(2)),
                       previous={"b": b}, provenance={7: chain})
    (d,) = diagnostics(trace)
    assert (d.kind, d.line, d.names) == ("backward-no-grad-fn", 2, ("b",))
    assert "rebuilt at line 3 of cell In [5]" in d.message and "`b.detach()` took `b`" in d.message


def test_saved_tensor_mutated_reads_stale_values_from_capture_but_not_batch_norm_buffers() -> None:
    cell = Cell("y = x.sigmoid()\narr[0] = 100.0\ny.sum().backward()\n")
    x, y = t(1, grad=True), t(2, grad=True, leaf=False, fn="SigmoidBackward0", node=8)
    cell.op("sigmoid", 2, "x.sigmoid()", (x,), (y,), target="y")
    nodes = (GraphNode(8, "SigmoidBackward0", 2, cell.site(2), saved=("result: (3,)",)),)
    cell.backward(4, t(3, grad=True, leaf=False, fn="SumBackward0"), nodes=nodes,
                  stale_saved=((8, "result", 2), (8, "running_mean", 2)))
    found = [d for d in diagnostics(cell.trace({"x": x, "y": y})) if d.kind == "saved-tensor-mutated"]
    assert [(d.severity, d.names) for d in found] == [("warning", ("y",))]


def test_exception_names_the_variables_on_its_line() -> None:
    cell = Cell("x = torch.ones(3)\ny = x @ w\n")
    trace = cell.trace({"x": t(1), "w": t(2)}, error=ErrorInfo("RuntimeError", "size mismatch", cell.site(3)))
    (d,) = diagnostics(trace)
    assert (d.kind, d.severity, d.line, set(d.names)) == ("exception", "error", 3, {"x", "w"})


# -- lineage helpers --------------------------------------------------------------------------------
def test_names_read_as_the_user_wrote_them() -> None:
    assert base_name("b (line 3)") == "b" and base_name("model.0.weight") == "model.0.weight"
    assert show("b (line 3)") == "`b` (as bound at line 3)"
    assert show("b (before this cell)") == "`b` (as it was before this cell)"
    assert show("h (in forward)") == "`h` (in `forward`)"


def test_source_helpers() -> None:
    assert assigned_name("total += loss") == "total" and assigned_name("x[0] = 1") is None
    assert assigned_value("z = x") == "x" and assigned_value("a, b = c") is None
    assert loop_names("for p in ps:\n    pass\n[q for q, r in s]") == {"p", "q", "r"}
    assert tainted_names("a = 1\nb = a * 2\nc = b + d\ne = 3\n", {"a"}) == {"a", "b", "c"}
    plain = OpEvent(1, "add_", Site(2), (t(1), t(2)))
    out = OpEvent(2, "add", Site(2), (t(1), t(2), t(3)), inplace=True)
    assert written(plain) == t(1) and written(out) == t(3)


# -- graphs: one per backward call site ----------------------------------------------------------
@pytest.mark.parametrize("body, lines", [
    ("w = torch.ones(3, requires_grad=True)\nfor t in range(10):\n    loss = (w * 2).sum()\n    loss.backward()\n",
     [4]),
    ("w = torch.ones(3, requires_grad=True)\nfor t in range(4):\n    (w * 2).sum().backward()\n    w.grad = None\n",
     [3]),
    ("w = torch.ones(3, requires_grad=True)\nfor t in range(3):\n    a = (w * 2).sum()\n    a.backward()\n"
     "    b = (w * 3).sum()\n    b.backward()\n", [4, 6]),
])
def test_a_loop_of_backward_calls_draws_one_graph_per_call_site(ip: Any, body: str, lines: list[int]) -> None:
    report, cell = report_of(ip, body)
    assert cell.error is None
    assert [(g.line, g.backward, g.calls) for g in report.graphs] == [(line, True, report.graphs[0].calls)
                                                                      for line in lines]
    assert report.graphs[0].calls >= 3


def test_a_result_not_backwarded_keeps_its_own_graph(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\nloss = (w * 2).sum()\nloss.backward()\nother = (w * w).mean()\n"
    report, _ = report_of(ip, body)
    assert [(g.root, g.backward) for g in report.graphs] == [("loss", True), ("other", False)]


def test_a_result_built_like_the_loss_on_another_line_keeps_its_graph(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\nloss = (w * 2).sum()\nloss.backward()\n"
            "val = (w * 2).sum()\n")
    report, _ = report_of(ip, body)
    assert [(g.root, g.backward) for g in report.graphs] == [("loss", True), ("val", False)]



# -- pure helpers: the block that turned recording off, one backward per site --------------------------
GRAD_BLOCKS = ("x = 1\nwith torch.inference_mode():\n    y = x\n    with torch.enable_grad():\n        z = y\n"
               "@torch.no_grad()\ndef f(a):\n    return a\nw = 2\n")


@pytest.mark.parametrize("line, block", [
    (3, "torch.inference_mode()"), (5, "torch.enable_grad()"), (8, "torch.no_grad()"), (1, "torch.no_grad()"),
])
def test_grad_context_names_the_innermost_block_at_a_line(line: int, block: str) -> None:
    assert grad_context(GRAD_BLOCKS, line) == block  # line 1 is outside every block: the default


def test_per_site_keeps_the_last_snapshot_of_each_site_in_first_call_order() -> None:
    def event(seq: int, line: int) -> BackwardEvent:
        snap = GraphSnapshot(seq, (GraphNode(seq, "N"),), ())
        return BackwardEvent(seq, "backward", Site(line, f"l{line}"), None, snap)

    events = (event(1, 5), event(2, 7), event(3, 5), event(4, 7), event(5, 5))
    assert [(e.site.line, e.seq) for e in per_site(events)] == [(5, 5), (7, 4)]
