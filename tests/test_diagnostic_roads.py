"""Every road to each mistake: one test id per spelling, so no diagnostic depends on one way of writing it.

Each cell runs plainly first and then under ``%%autograd`` through the real shell: the error
must be the same, and the report must name the line, the variables and the fix for that road.
``.cuda()`` (a road to nonleaf-grad) runs only where a GPU is present; it is skipped elsewhere.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from conftest import report_of, run
from test_diagnostics import diagnose, line_of, one, serious

# -- requires-grad-int: the flag set on an integer tensor ---------------------------------------
INT_ROADS = {
    "torch.tensor literal": ("x = torch.tensor([1, 2], requires_grad=True)\n", "x = torch", "`[1., 2.]`"),
    "factory with an int dtype": ("x = torch.zeros(3, dtype=torch.long, requires_grad=True)\n", "x = torch",
                                  "`dtype=torch.float32`"),
    "arange with int bounds": ("x = torch.arange(3, requires_grad=True)\n", "x = torch", "`torch.arange(3.)`"),
    "requires_grad_()": ("x = torch.tensor([1, 2])\nx.requires_grad_()\n", "requires_grad_",
                         "`x = x.float().requires_grad_()`"),
    "the attribute": ("x = torch.tensor([1, 2])\nx.requires_grad = True\n", "x.requires_grad =",
                      "`x = x.float().requires_grad_()`"),
}


@pytest.mark.parametrize("road", list(INT_ROADS))
def test_requires_grad_int_gives_the_fix_for_its_road(ip: Any, road: str) -> None:
    body, where, fix = INT_ROADS[road]
    report = diagnose(ip, body)
    d = one(report, "requires-grad-int", "error")
    assert (d.line, d.names) == (line_of(body, where), ("x",))
    assert fix in d.message and "integer tensor" in d.message
    assert [x.kind for x in report.diagnostics] == ["requires-grad-int"]  # the generic exception is replaced


# -- grad-accumulated: backward sums into .grad that nobody cleared ------------------------------
ACCUMULATE_ROADS = {
    "manual loop": ("w = torch.ones(3, requires_grad=True)\nfor i in range(3):\n    loss = (w * 2).sum()\n"
                    "    loss.backward()\n    with torch.no_grad():\n        w -= 0.1 * w.grad\n",
                    "loss.backward", ("w",), "`w.grad = None`"),
    "optimizer loop": ("model = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                       "x = torch.randn(4, 2)\nfor i in range(3):\n    loss = model(x).pow(2).mean()\n"
                       "    loss.backward()\n    opt.step()\n",
                       "loss.backward", ("model",), "`opt.zero_grad()`"),
    "hooked leaf": ("w = torch.ones(3, requires_grad=True)\nw.register_hook(lambda g: g.clamp(-1, 1))\n"
                    "for i in range(3):\n    loss = (w * 2).sum()\n    loss.backward()\n    with torch.no_grad():\n"
                    "        w -= 0.1 * w.grad\n", "loss.backward", ("w",), "`w.grad = None`"),
    "optimizer over a list of tensors": ("w = torch.ones(3, requires_grad=True)\nopt = torch.optim.SGD([w], lr=0.1)\n"
                                         "for i in range(3):\n    (w ** 2).sum().backward()\n    opt.step()\n",
                                         ".backward()", ("w",), "`opt.zero_grad()`"),
}


@pytest.mark.parametrize("road", list(ACCUMULATE_ROADS))
def test_grad_accumulated_on_every_road_in_a_loop(ip: Any, road: str) -> None:
    body, where, leaves, fix = ACCUMULATE_ROADS[road]
    report = diagnose(ip, body)
    d = one(report, "grad-accumulated", "warning")
    assert d.line == line_of(body, where) and {n.split(".")[0] for n in d.names} == set(leaves)
    assert "earlier iteration of this loop" in d.message and fix in d.message
    assert serious(report) == ["grad-accumulated"]


def test_grad_accumulated_across_cells_with_an_optimizer(ip: Any) -> None:
    run(ip, "model = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\nx = torch.randn(4, 2)")
    body = "loss = model(x).pow(2).mean()\nloss.backward()\nopt.step()\n"
    report_of(ip, body)
    report, _ = report_of(ip, body)
    d = one(report, "grad-accumulated", "warning")
    assert d.line == 2 and "model" in d.names[0]
    assert "re-running the cell" in d.message and "`opt.zero_grad()`" in d.message


# -- nonleaf-grad: .grad read on a tensor that is not a leaf -------------------------------------
NONLEAF_ROADS = {
    ".to(dtype)": ("w = torch.randn(3, requires_grad=True).to(torch.float64)\n", ".to(...)"),
    ".double()": ("w = torch.randn(3, requires_grad=True).double()\n", ".double(...)"),
    ".float()": ("w = torch.randn(3, dtype=torch.float64, requires_grad=True).float()\n", ".float(...)"),
}


@pytest.mark.parametrize("road", list(NONLEAF_ROADS))
def test_nonleaf_grad_after_a_conversion_names_the_conversion(ip: Any, road: str) -> None:
    first, how = NONLEAF_ROADS[road]
    body = first + "loss = (w * 2).sum()\nloss.backward()\nprint(w.grad)\n"
    report = diagnose(ip, body)
    d = one(report, "nonleaf-grad", "warning")
    assert (d.line, d.names) == (line_of(body, "print"), ("w",))
    assert "Line 1" in d.message and how in d.message and "requires_grad=True)" in d.message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: .cuda() cannot run on CPU-only machines")
def test_nonleaf_grad_after_cuda_names_the_conversion(ip: Any) -> None:
    body = "w = torch.randn(3, requires_grad=True).cuda()\nloss = (w * 2).sum()\nloss.backward()\nprint(w.grad)\n"
    report = diagnose(ip, body)
    d = one(report, "nonleaf-grad", "warning")
    assert (d.line, d.names) == (line_of(body, "print"), ("w",))
    assert "Line 2" in d.message and ".cuda(...)" in d.message and "device=device" in d.message


def test_nonleaf_grad_after_an_arithmetic_update_says_update_in_place(ip: Any) -> None:
    body = ("w = torch.randn(3, requires_grad=True)\nfor i in range(3):\n    loss = (w * 2).sum()\n"
            "    loss.backward()\n    w = w - 0.1 * w.grad\n")
    report = diagnose(ip, body)
    d = one(report, "nonleaf-grad", "warning")
    assert (d.line, d.names) == (line_of(body, "w = w -"), ("w",))
    assert "rebound `w`" in d.message and "with torch.no_grad():" in d.message and "w -= " in d.message
    assert "grad-accumulated" not in serious(report)  # the rebinding is the lesson, not accumulation


# -- the in-place family ------------------------------------------------------------------------
INPLACE_ROADS = {
    "a leaf": ("w = torch.ones(3, requires_grad=True)\nw.add_(1)\n", "w.add_", "leaf-inplace", ("w",),
               "with torch.no_grad():"),
    "a view of a leaf (slice)": ("w = torch.ones(3, requires_grad=True)\nv = w[:2]\nv.add_(1)\n", "v.add_",
                                 "leaf-inplace", ("v", "w"), "`v = w[:2].clone()`"),
    "a view of a leaf (.view)": ("w = torch.ones(2, 2, requires_grad=True)\nv = w.view(4)\nv[0] = 3\n", "v[0]",
                                 "leaf-inplace", ("v", "w"), "`v = w.view(4).clone()`"),
    "leaf moved into the graph interior": ("w = torch.ones(3, requires_grad=True)\nloss = (w * 2).sum()\n"
                                           "w.requires_grad_(False)\nw.mul_(torch.ones(3, requires_grad=True))\n"
                                           "loss.backward()\n", "loss.backward", "leaf-inplace", ("w",),
                                           "graph interior"),
    "saved tensor changed (version)": ("x = torch.ones(3, requires_grad=True)\ny = x.exp()\ny.add_(1)\n"
                                       "y.sum().backward()\n", "y.add_", "inplace-saved-tensor", ("y",),
                                       "`y = y.add(1)`"),
}


CAPTURE_BUGS: dict[str, str] = {}  # roads that fail only because of capture: none today


def roads(table: dict[str, Any]) -> list[Any]:
    return [pytest.param(road, marks=pytest.mark.xfail(strict=True, reason=CAPTURE_BUGS[road]))
            if road in CAPTURE_BUGS else road for road in table]


@pytest.mark.parametrize("road", roads(INPLACE_ROADS))
def test_inplace_errors_name_the_line_the_tensors_and_the_fix(ip: Any, road: str) -> None:
    body, where, kind, names, fix = INPLACE_ROADS[road]
    report = diagnose(ip, body)
    d = one(report, kind, "error")
    assert (d.line, d.names) == (line_of(body, where), names)
    assert fix in d.message
    assert serious(report) == [kind]


def test_leaf_moved_into_the_graph_interior_is_explained_apart_from_the_capture_warning(ip: Any) -> None:
    body, where, kind, names, fix = INPLACE_ROADS["leaf moved into the graph interior"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # capture's stray read of `.grad`: see CAPTURE_BUGS
        report = diagnose(ip, body)
    d = one(report, kind, "error")
    assert (d.line, d.names) == (line_of(body, where), names)
    assert f"`w.mul_(torch.ones(3, requires_grad=True))` at line {line_of(body, 'w.mul_')}" in d.message
    assert "torch.no_grad()" in d.message


# -- graph cuts: a value left autograd, then backward found no graph ------------------------------
CUT_ROADS = {
    ".detach()": ("z = y.detach()", "`y.detach()`"),
    ".data": ("z = y.data", "`y.data`"),
    ".item()": ("z = torch.tensor(y.sum().item())", ".item()"),
    ".tolist()": ("z = torch.tensor(y.tolist())", "`y.tolist()`"),
    ".numpy()": ("z = torch.tensor(y.detach().numpy())", ".numpy()"),
    "torch.tensor(t)": ("z = torch.tensor(y)", "`torch.tensor(y)`"),
    "torch.no_grad()": ("with torch.no_grad():\n    z = y * 1", "`torch.no_grad()`"),
    "torch.inference_mode()": ("with torch.inference_mode():\n    z = y * 1", "`torch.inference_mode()`"),
    "set_grad_enabled(False)": ("with torch.set_grad_enabled(False):\n    z = y * 1",
                                "`torch.set_grad_enabled(False)`"),
}


@pytest.mark.parametrize("road", list(CUT_ROADS))
def test_backward_without_a_graph_names_the_cut_for_its_road(ip: Any, road: str) -> None:
    cut, how = CUT_ROADS[road]
    body = f"w = torch.randn(3, requires_grad=True)\ny = w * 2\n{cut}\nloss = (z ** 2).sum()\nloss.backward()\n"
    report = diagnose(ip, body)
    d = one(report, "backward-no-grad-fn", "error")
    assert d.line == line_of(body, "loss.backward") and d.names[0] == "loss" and {"y", "w"} & set(d.names)
    cut_line = line_of(body, "z = ")
    assert f"line {cut_line}: " in d.message and how in d.message
    if "with" in cut:  # the fix for a block is to move the computation out of it, not a conversion
        assert f"outside the `with {how.strip('`')}:` block" in d.message
    note = one(report, "graph-break", "note")
    assert note.line == cut_line


# -- eval-keeps-grad: model.eval() mistaken for no_grad --------------------------------------------
EVAL = "model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5))\nx = torch.randn(2, 3)\n"


def test_eval_without_no_grad_is_a_note_that_names_the_result(ip: Any) -> None:
    body = EVAL + "model.eval()\npred = model(x)\nprint(pred.sum().item())\n"
    report = diagnose(ip, body)
    d = one(report, "eval-keeps-grad", "note")
    assert (d.line, d.names) == (line_of(body, "pred = "), ("pred", "model"))
    assert f"`model.eval()` at line {line_of(body, 'eval')}" in d.message and "with torch.no_grad():" in d.message
    assert serious(report) == []


@pytest.mark.parametrize("after", [
    "with torch.no_grad():\n    pred = model(x)\n",
    "with torch.inference_mode():\n    pred = model(x)\n",
    "pred = model(x)\npred.sum().backward()\n",
])
def test_eval_is_silent_when_recording_is_off_or_the_graph_is_used(ip: Any, after: str) -> None:
    report = diagnose(ip, EVAL + "model.eval()\n" + after)
    assert "eval-keeps-grad" not in [d.kind for d in report.diagnostics]
