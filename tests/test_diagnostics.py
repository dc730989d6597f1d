"""Every diagnostic kind, found at the right line with the right names, through a real InteractiveShell.

Each test runs the cell plainly first, then under ``%%autograd``: the cell must
raise exactly what it raised plainly, and the report must explain it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import kinds, report_of, run

SEED = Path(__file__).resolve().parent / "data" / "seed_tutorial.txt"  # a copy of the seed tutorial


# -- helpers ----------------------------------------------------------------------------------
def fresh(shell: Any) -> None:
    shell.reset(new_session=False)
    shell.run_cell("import torch\nimport numpy as np", store_history=False)


def plain_error(shell: Any, body: str) -> tuple[str, str] | None:
    fresh(shell)
    error = run(shell, body).error
    fresh(shell)
    return None if error is None else (type(error).__name__, str(error))


def diagnose(shell: Any, body: str) -> Any:
    """Run ``body`` plain and under the magic; the error must be the same. Returns the report."""
    expected = plain_error(shell, body)
    report, cell = report_of(shell, body)
    got = None if cell.error is None else (type(cell.error).__name__, str(cell.error))
    assert got == expected, f"the magic changed the cell's error: {got} != {expected}"
    assert report is not None
    return report


def line_of(body: str, text: str, nth: int = 0) -> int:
    """Line (the body's, as a traceback counts: its first line is 1) of the nth line containing ``text``."""
    hits = [i for i, line in enumerate(body.splitlines()) if text in line]
    return hits[nth] + 1


def serious(report: Any) -> list[str]:
    return [d.kind for d in report.diagnostics if d.severity != "note"]


def one(report: Any, kind: str, severity: str | None = None) -> Any:
    found = [d for d in report.diagnostics if d.kind == kind and (severity is None or d.severity == severity)]
    assert len(found) == 1, f"expected one {kind}, got {[(d.kind, d.severity, d.line) for d in report.diagnostics]}"
    return found[0]


# -- alias-write and shared-memory -----------------------------------------------------------
def test_alias_write_names_both_variables_at_the_write(ip: Any) -> None:
    body = "x = torch.tensor([1, 2, 3, 4])\nz = x\nz[0] = 5\n"
    report = diagnose(ip, body)
    d = one(report, "alias-write", "warning")
    assert (d.line, d.code, set(d.names)) == (line_of(body, "z[0]"), "z[0] = 5", {"x", "z"})
    assert d.names[0] == "z"  # the name written through comes first
    assert f"`z = x` at line {line_of(body, 'z = x')}" in d.message
    assert "`z = x.clone()`" in d.message
    assert serious(report) == ["alias-write"]


def test_alias_write_through_a_view_names_the_line_that_made_the_view(ip: Any) -> None:
    body = "x = torch.zeros(3, 4)\ny = x[:, :2]\ny[0, 0] = 1\n"
    d = one(diagnose(ip, body), "alias-write", "warning")
    assert (d.line, set(d.names)) == (line_of(body, "y[0, 0]"), {"x", "y"})
    assert "y = x[:, :2].clone()" in d.message and f"line {line_of(body, 'y = x')}" in d.message


def test_alias_write_through_a_tensor_changes_its_numpy_array(ip: Any) -> None:
    # was a warning: `.numpy()` promises sharing, so the write is what the user asked to see (issue 10)
    body = "x = torch.ones(3)\narr = x.numpy()\nx.add_(1)\n"
    report = diagnose(ip, body)
    d = one(report, "alias-write", "note")
    assert (d.line, d.names) == (line_of(body, "add_"), ("x", "arr"))
    assert "arr = x.numpy().copy()" in d.message
    assert serious(report) == []
    note = one(report, "shared-memory", "note")
    assert (note.line, set(note.names)) == (line_of(body, "arr ="), {"arr", "x"})


# Sharing asked for by name (the NumPy bridge, `out=`): the write is the lesson, said as a note.
DELIBERATE_SHARING = {
    "numpy then tensor add_": ("t = torch.ones(5)\nn = t.numpy()\nt.add_(1)\n", "t.add_", {"t", "n"}, "`.numpy()`"),
    "from_numpy then tensor add_": ("a = np.ones(5)\nb = torch.from_numpy(a)\nb.add_(1)\n", "b.add_", {"a", "b"},
                                    "torch.from_numpy"),
    "as_tensor then tensor add_": ("a = np.ones(5)\nb = torch.as_tensor(a)\nb.add_(1)\n", "b.add_", {"a", "b"},
                                   "torch.as_tensor"),
    "out= then another out= write": ("a = torch.randn(2, 2)\nb = torch.randn(2, 2)\nc = torch.empty(2, 2)\n"
                                     "d = torch.matmul(a, b, out=c)\ntorch.rand(2, 2, out=c)\n",
                                     "torch.rand(2, 2, out", {"c", "d"}, "`out=`"),
    "out= then setitem": ("c = torch.empty(2)\nd = torch.add(torch.ones(2), 1, out=c)\nc[0] = 7\n", "c[0]",
                          {"c", "d"}, "`out=`"),
}


@pytest.mark.parametrize("road", list(DELIBERATE_SHARING))
def test_alias_write_through_sharing_the_user_asked_for_is_a_note(ip: Any, road: str) -> None:
    body, write, names, how = DELIBERATE_SHARING[road]
    report = diagnose(ip, body)
    d = one(report, "alias-write", "note")
    assert (d.line, set(d.names)) == (line_of(body, write), names)
    assert how in d.message and "as expected" in d.message and "Fix:" not in d.message
    assert serious(report) == []


def test_numpy_side_write_after_from_numpy_is_only_the_sharing_note(ip: Any) -> None:
    body = "a = np.ones(5)\nb = torch.from_numpy(a)\nnp.add(a, 1, out=a)\nprint(a)\nprint(b)\n"
    report = diagnose(ip, body)
    assert serious(report) == []
    assert one(report, "shared-memory", "note").names == ("b", "a")


def test_alias_write_keeps_the_warning_when_one_sharer_was_not_asked_for(ip: Any) -> None:
    body = "t = torch.ones(3)\nn = t.numpy()\nz = t\nz.add_(1)\n"
    d = one(diagnose(ip, body), "alias-write", "warning")
    assert (d.line, set(d.names)) == (line_of(body, "z.add_"), {"z", "t", "n"})
    assert "`z = t.clone()`" in d.message


@pytest.mark.parametrize("write", ["a[0][1] = 561", "a[0, 1] = 561", "a[0].fill_(561)"])
def test_alias_write_blames_the_assignment_even_through_an_indexed_temporary(ip: Any, write: str) -> None:
    body = f"a = torch.ones(2, 2)\nb = a\n{write}\n"
    d = one(diagnose(ip, body), "alias-write", "warning")
    assert (d.line, set(d.names)) == (3, {"a", "b"})
    assert "`b = a` at line 2" in d.message and "`b = a.clone()` at line 2" in d.message
    assert "torch.ones(2, 2).clone()" not in d.message and "a view of" not in d.message


@pytest.mark.parametrize("first, write, fix", [
    ("a = torch.ones(2, 2)\nb = a", "a[0, 1] = 561", "`b = a.clone()` where `b` was bound"),
    ("a = torch.ones(2, 2)\nb = a[0]", "b.add_(1)", "`.clone()` where `a` or `b` was made from the other"),
    ("%%autograd -q\na = torch.ones(2, 2)\nb = a[0]", "b.add_(1)", "`b = a[0].clone()` at line 2 of cell In ["),
    ("a = np.ones(3)\nb = torch.from_numpy(a)", "b.add_(1)", "`b = torch.tensor(a)`"),
])
def test_alias_write_from_an_earlier_cell_gives_a_whole_fix(ip: Any, first: str, write: str, fix: str) -> None:
    run(ip, first)
    report, _ = report_of(ip, write + "\n")
    d = one(report, "alias-write")
    assert d.line == 1 and set(d.names) == {"a", "b"}
    fixes = d.message.splitlines()[-1]
    assert fix in fixes and not re.match(r"(Fix|If you want them independent): or ", fixes), fixes


def test_alias_write_through_detach_changes_the_original(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\nv = w.detach()\nv.zero_()\n"
    d = one(diagnose(ip, body), "alias-write", "warning")
    assert (d.line, d.names) == (line_of(body, "zero_"), ("v", "w"))
    assert "`.detach()`" in d.message


@pytest.mark.parametrize("make, how", [
    ("t = torch.from_numpy(a)", "torch.from_numpy"),
    ("t = torch.as_tensor(a)", "torch.as_tensor"),
])
def test_shared_memory_notes_tensors_made_over_an_array(ip: Any, make: str, how: str) -> None:
    body = f"a = np.ones(3)\n{make}\n"
    report = diagnose(ip, body)
    d = one(report, "shared-memory", "note")
    assert (d.line, set(d.names)) == (2, {"t", "a"})
    assert how in d.message
    assert serious(report) == []


def test_shared_memory_notes_data(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\nd = w.data\n"
    d = one(diagnose(ip, body), "shared-memory", "note")
    assert (d.line, d.names) == (2, ("d", "w"))


def test_gradcheck_perturbing_an_input_a_dual_tensor_views_is_no_alias_write(ip: Any) -> None:
    # gradcheck clones each input element, writes it +-eps, and copies the clone back: torch's own
    # code undoes its writes, so `dual` (a view of `primal`) never sees them after the call
    fresh(ip)
    run(ip, "import torch.autograd.forward_ad as fwAD")
    body = ("primal = torch.randn(3, dtype=torch.double, requires_grad=True)\n"
            "tangent = torch.randn(3, dtype=torch.double)\n"
            "def fn(x):\n    return (x * x).sum()\n"
            "with fwAD.dual_level():\n    dual = fwAD.make_dual(primal, tangent)\n    out = fn(dual)\n"
            "ok = torch.autograd.gradcheck(fn, (primal,), check_forward_ad=True)\n")
    report, cell = report_of(ip, body)
    assert cell.error is None and ip.user_ns["ok"] is True
    assert "alias-write" not in kinds(report), [d.message for d in report.diagnostics]
    # the user's own write through the same alias still warns
    report, _ = report_of(ip, body + "with torch.no_grad():\n    primal[0] = 5.0\n")
    d = one(report, "alias-write", "warning")
    assert d.line == line_of(body + "with torch.no_grad():\n    primal[0] = 5.0\n", "primal[0] = 5.0")
    assert set(d.names) == {"primal", "dual"}


# -- graph-break and no-gradient ---------------------------------------------------------------
def test_graph_break_note_for_a_value_taken_out_to_log(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\nloss = (w * 2).sum()\nv = loss.item()\nloss.backward()\n"
    report = diagnose(ip, body)
    d = one(report, "graph-break", "note")
    assert (d.line, d.names) == (line_of(body, ".item()"), ("loss", "v"))
    assert serious(report) == []


def test_graph_break_warning_when_a_numpy_round_trip_feeds_backward(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\nu = torch.ones(3, requires_grad=True)\n"
            "p = (w * 2).detach().numpy()\nloss = (torch.tensor(p) * u).sum()\nloss.backward()\n")
    report = diagnose(ip, body)
    d = one(report, "graph-break", "warning")
    assert d.line == line_of(body, "p = ")
    assert {"p", "w"} <= set(d.names)
    assert f"line {line_of(body, 'loss.backward')}" in d.message and "`w`" in d.message
    assert serious(report) == ["graph-break"]


def test_no_gradient_names_the_leaf_and_the_line_that_cut_its_path(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\ns = (w * 2).sum().item()\n"
            "loss = torch.tensor(s, requires_grad=True) * 3\nloss.backward()\nprint(w.grad)\n")
    report = diagnose(ip, body)
    d = one(report, "no-gradient", "warning")
    assert (d.line, d.names) == (line_of(body, ".item()"), ("w",))
    assert "`w.grad` is still None" in d.message and f"line {line_of(body, 'loss.backward')}" in d.message
    assert serious(report) == ["no-gradient"]


def test_detach_for_a_gan_discriminator_step_is_only_a_note(ip: Any) -> None:
    body = ("G = torch.nn.Linear(2, 4)\nD = torch.nn.Linear(4, 1)\nfake = G(torch.randn(8, 2))\n"
            "errD = D(fake.detach()).mean()\nerrD.backward()\n")
    report = diagnose(ip, body)
    assert serious(report) == []
    assert one(report, "graph-break", "note").line == line_of(body, "detach")


HF_MODEL = """from dataclasses import dataclass
@dataclass
class Output:  # what a Hugging Face model returns: an object holding the loss
    loss: torch.Tensor
    logits: torch.Tensor
class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10)
    def forward(self, input_ids, attention_mask, labels):
        logits = self.head(self.emb(input_ids)) * attention_mask[..., None]
        return Output(torch.nn.functional.cross_entropy(logits.view(-1, 10), labels.view(-1)), logits)
model = TinyLM()
ids, mask, labels = torch.randint(0, 10, (2, 5)), torch.ones(2, 5), torch.randint(0, 10, (2, 5))
"""


def test_graph_break_names_the_value_as_written_not_the_call_that_made_its_holder(ip: Any) -> None:
    fresh(ip)
    run(ip, HF_MODEL)
    body = ("opt = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
            "for step in range(3):\n"
            "    out = model(input_ids=ids, attention_mask=mask, labels=labels)\n"
            "    out.loss.backward()\n    opt.step()\n    opt.zero_grad()\n"
            "print(out.loss.item())\n")
    report, cell = report_of(ip, body)  # not `diagnose`: it would run the cell in a fresh namespace
    assert cell.error is None
    d = one(report, "graph-break", "note")
    assert d.line == line_of(body, "print(out.loss.item())")
    assert "`out.loss.item()` at line 7 took `out.loss` out of the graph" in d.message
    assert "model(input_ids" not in d.message


# -- errors from backward --------------------------------------------------------------------------
def test_backward_no_grad_fn_points_at_the_line_that_rebuilt_it(ip: Any) -> None:
    body = ("a = torch.tensor([1., 2., 3.], requires_grad=True)\nb = a**2\n"
            "b = torch.tensor(b.detach().numpy())\nb.backward()\n")
    report = diagnose(ip, body)
    d = one(report, "backward-no-grad-fn", "error")
    assert (d.line, d.code) == (line_of(body, "b.backward"), "b.backward()")
    assert set(d.names) == {"a", "b"}
    assert f"rebuilt at line {line_of(body, 'b = torch.tensor')}" in d.message
    assert "`b.detach()`" in d.message and "NumPy" in d.message
    assert serious(report) == ["backward-no-grad-fn"]


def test_backward_no_grad_fn_follows_the_value_through_python_numbers(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\ns = (w * 2).sum().item()\nm = s * 3\n"
            "loss = torch.tensor(m)\nloss.backward()\n")
    d = one(diagnose(ip, body), "backward-no-grad-fn", "error")
    assert (d.line, d.names) == (line_of(body, "loss.backward"), ("loss", "w"))
    assert f"line {line_of(body, '.item()')}: `(w * 2).sum().item()`" in d.message
    assert f"rebuilt at line {line_of(body, 'loss = ')}" in d.message


def test_backward_no_grad_fn_when_nothing_requires_grad(ip: Any) -> None:
    body = "x = torch.ones(3)\ny = (x * 2).sum()\ny.backward()\n"
    d = one(diagnose(ip, body), "backward-no-grad-fn", "error")
    assert (d.line, d.names) == (3, ("y",))
    assert "requires_grad=True" in d.message


def test_backward_twice_names_the_first_backward(ip: Any) -> None:
    body = "x = torch.tensor([1., 2.], requires_grad=True)\ny = (x * x).sum()\ny.backward()\ny.backward()\n"
    report = diagnose(ip, body)
    d = one(report, "backward-twice", "error")
    assert (d.line, d.names) == (line_of(body, "y.backward", 1), ("y",))
    assert f"line {line_of(body, 'y.backward')}" in d.message and "retain_graph=True" in d.message
    assert serious(report) == ["backward-twice"]


def test_backward_twice_warns_when_the_second_pass_silently_doubles_grad(ip: Any) -> None:
    body = "x = torch.tensor([1., 2.], requires_grad=True)\ny = (x + 1).sum()\ny.backward()\ny.backward()\n"
    report = diagnose(ip, body)
    d = one(report, "backward-twice", "warning")
    assert (d.line, d.names) == (line_of(body, "y.backward", 1), ("y", "x"))
    assert ip.user_ns["x"].grad.tolist() == [2.0, 2.0]
    assert serious(report) == ["backward-twice"]


def test_backward_non_scalar_shows_the_shape_and_both_fixes(ip: Any) -> None:
    body = "x = torch.tensor([1., 2.], requires_grad=True)\ny = x * x\ny.backward()\n"
    d = one(diagnose(ip, body), "backward-non-scalar", "error")
    assert (d.line, d.names) == (3, ("y",))
    assert "[2]" in d.message and "y.sum().backward()" in d.message and "torch.ones_like(y)" in d.message


def test_inplace_saved_tensor_names_the_saving_and_the_modifying_line(ip: Any) -> None:
    body = "x = torch.tensor([1., 2.], requires_grad=True)\ny = x.sigmoid()\ny.add_(1)\ny.sum().backward()\n"
    report = diagnose(ip, body)
    d = one(report, "inplace-saved-tensor", "error")
    assert (d.line, d.code, d.names) == (line_of(body, "add_"), "y.add_(1)", ("y",))
    assert f"line {line_of(body, 'sigmoid')}" in d.message and f"line {line_of(body, 'add_')}" in d.message
    assert "version 0" in d.message and "version 1" in d.message
    assert serious(report) == ["inplace-saved-tensor"]


def test_inplace_saved_tensor_when_an_input_was_saved(ip: Any) -> None:
    body = ("w = torch.tensor([1., 2.], requires_grad=True)\nx = torch.tensor([3., 4.])\ny = (x * w).sum()\n"
            "x += 1\ny.backward()\n")
    d = one(diagnose(ip, body), "inplace-saved-tensor", "error")
    assert (d.line, d.names[0]) == (line_of(body, "x += 1"), "x")
    assert f"line {line_of(body, 'y = ')}" in d.message and "`x = x + 1`" in d.message


def test_inplace_saved_tensor_inside_a_module_names_the_layer_call(ip: Any) -> None:
    body = ("model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Sigmoid(), torch.nn.ReLU(inplace=True))\n"
            "out = model(torch.randn(2, 4)).sum()\nout.backward()\n")
    d = one(diagnose(ip, body), "inplace-saved-tensor", "error")
    assert (d.line, d.names) == (line_of(body, "out = "), ("model",))
    assert "`sigmoid` inside" in d.message and "`relu` inside" in d.message and "inplace=True" in d.message


def test_backward_twice_through_a_carried_rnn_state_says_detach_it(ip: Any) -> None:
    body = ("cell = torch.nn.RNNCell(3, 5)\nh = torch.zeros(2, 5)\nfor t in range(3):\n"
            "    h = cell(torch.randn(2, 3), h)\n    loss = h.pow(2).mean()\n    loss.backward()\n")
    d = one(diagnose(ip, body), "backward-twice", "error")
    assert (d.line, d.names) == (line_of(body, "loss.backward"), ("loss", "h"))
    assert "`h = h.detach()`" in d.message and "earlier iteration" in d.message


def test_saved_tensor_mutated_through_numpy_gives_a_warning(ip: Any) -> None:
    body = ("x = torch.ones(3, requires_grad=True)\ny = x.sigmoid()\narr = y.detach().numpy()\narr[0] = 100.0\n"
            "y.sum().backward()\n")
    report = diagnose(ip, body)
    d = one(report, "saved-tensor-mutated", "warning")
    assert set(d.names) == {"y", "arr"}
    assert "SigmoidBackward0" in d.message and f"line {line_of(body, 'backward')}" in d.message


def test_saved_tensor_mutated_through_data_names_the_write(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\nx = torch.arange(3.)\ny = (x * w).sum()\n"
            "w.data.mul_(2)\ny.backward()\n")
    report = diagnose(ip, body)
    d = one(report, "saved-tensor-mutated", "warning")
    assert (d.line, d.names[0]) == (line_of(body, "mul_"), "w")
    assert f"line {line_of(body, 'y = ')}" in d.message


# -- errors from ops -----------------------------------------------------------------------
@pytest.mark.parametrize("write", ["x.add_(1)", "x[0] = 3"])
def test_leaf_inplace_suggests_no_grad(ip: Any, write: str) -> None:
    body = f"x = torch.tensor([1., 2.], requires_grad=True)\n{write}\n"
    report = diagnose(ip, body)
    d = one(report, "leaf-inplace", "error")
    assert (d.line, d.names) == (2, ("x",))
    assert "with torch.no_grad():" in d.message
    assert serious(report) == ["leaf-inplace"]


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")  # torch's own; see R5
def test_nonleaf_grad_offers_retain_grad(ip: Any) -> None:
    body = "x = torch.ones(3, requires_grad=True)\ny = x * 2\ny.sum().backward()\ng = y.grad\n"
    report = diagnose(ip, body)
    d = one(report, "nonleaf-grad", "warning")
    assert (d.line, d.names) == (4, ("y",))
    assert "y.retain_grad()" in d.message


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_nonleaf_grad_explains_the_conversion_trap(ip: Any) -> None:
    body = "x = torch.randn(3, requires_grad=True).double()\n(x * 2).sum().backward()\nprint(x.grad)\n"
    d = one(diagnose(ip, body), "nonleaf-grad", "warning")
    assert (d.line, d.names) == (3, ("x",))
    assert "Line 1" in d.message and ".double(" in d.message and "requires_grad=True)" in d.message


def test_requires_grad_int_suggests_a_float_dtype(ip: Any) -> None:
    body = "x = torch.tensor([1, 2], requires_grad=True)\n"
    report = diagnose(ip, body)
    d = one(report, "requires-grad-int", "error")
    assert (d.line, d.names) == (1, ("x",))
    assert "float" in d.message
    assert serious(report) == ["requires-grad-int"]


def test_numpy_requires_grad_explains_detach_and_sharing(ip: Any) -> None:
    body = "x = torch.ones(3, requires_grad=True)\na = x.numpy()\n"
    d = one(diagnose(ip, body), "numpy-requires-grad", "error")
    assert (d.line, d.names) == (2, ("x",))
    assert "x.detach().numpy()" in d.message and "shares memory" in d.message


def test_requires_grad_nonleaf_false_is_an_error(ip: Any) -> None:
    body = "x = torch.ones(3, requires_grad=True)\ny = x * 2\ny.requires_grad = False\n"
    d = one(diagnose(ip, body), "requires-grad-nonleaf", "error")
    assert (d.line, d.names) == (3, ("y",))
    assert "y = y.detach()" in d.message


def test_requires_grad_nonleaf_true_is_a_silent_no_op_warning(ip: Any) -> None:
    body = "x = torch.ones(3, requires_grad=True)\ny = x * 2\ny.requires_grad_(True)\n"
    report = diagnose(ip, body)
    d = one(report, "requires-grad-nonleaf", "warning")
    assert (d.line, d.names) == (3, ("y",))
    assert serious(report) == ["requires-grad-nonleaf"]


def test_history_growing_in_a_loop_that_runs_backward(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\ntotal = 0\nfor i in range(4):\n"
            "    loss = (w * 2).sum()\n    loss.backward()\n    total = total + loss\n")
    report = diagnose(ip, body)
    d = one(report, "history-growing", "warning")
    assert (d.line, d.names) == (line_of(body, "total = total"), ("total",))
    assert "loss.item()" in d.message
    assert serious(report) == ["history-growing"]


def test_grad_accumulated_in_a_loop_without_zero_grad(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\nopt = torch.optim.SGD([w], lr=0.1)\nfor i in range(3):\n"
            "    loss = (w * 2).sum()\n    loss.backward()\n    opt.step()\n")
    report = diagnose(ip, body)
    d = one(report, "grad-accumulated", "warning")
    assert (d.line, d.names) == (line_of(body, "loss.backward"), ("w",))
    assert "zero_grad()" in d.message
    assert serious(report) == ["grad-accumulated"]


def test_grad_accumulated_in_a_model_training_loop_names_the_optimizer(ip: Any) -> None:
    body = ("model = torch.nn.Linear(4, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "for step in range(3):\n    loss = model(torch.randn(8, 4)).pow(2).mean()\n    loss.backward()\n"
            "    opt.step()\n")
    d = one(diagnose(ip, body), "grad-accumulated", "warning")
    assert (d.line, set(d.names)) == (line_of(body, "loss.backward"), {"model.weight", "model.bias"})
    assert "`opt.zero_grad()`" in d.message


def test_no_gradient_for_a_numpy_loss_names_every_parameter_once(ip: Any) -> None:
    body = ("model = torch.nn.Linear(3, 1)\npred = model(torch.randn(5, 3))\n"
            "loss = torch.tensor(np.mean(pred.detach().numpy() ** 2), requires_grad=True)\nloss.backward()\n")
    report = diagnose(ip, body)
    d = one(report, "no-gradient", "warning")
    assert (d.line, set(d.names)) == (line_of(body, "loss = "), {"model.weight", "model.bias"})
    assert serious(report) == ["no-gradient"]


def test_graph_break_note_for_a_value_computed_under_no_grad(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\nwith torch.no_grad():\n    y = w * 2\n"
    report = diagnose(ip, body)
    d = one(report, "graph-break", "note")
    assert (d.line, d.names) == (3, ("w", "y"))
    assert "torch.no_grad()" in d.message


def test_grad_accumulated_across_two_runs_of_the_same_cell(ip: Any) -> None:
    fresh(ip)
    run(ip, "x = torch.tensor([5.], requires_grad=True)\ny = torch.tensor([7.], requires_grad=True)")
    body = "z = (x + y) - 2 * x\nz.backward()\n"
    first, _ = report_of(ip, body)
    assert serious(first) == []
    second, cell = report_of(ip, body)
    assert cell.error is None
    d = one(second, "grad-accumulated", "warning")
    assert (d.line, set(d.names)) == (2, {"x", "y"})
    assert ip.user_ns["x"].grad.tolist() == [-2.0]


def test_exception_keeps_its_type_message_and_line(ip: Any) -> None:
    body = "x = torch.ones(3)\ny = x @ torch.ones(4)\n"
    report = diagnose(ip, body)
    d = one(report, "exception", "error")
    assert (d.line, d.names) == (2, ("x",))
    assert "RuntimeError" in d.message


def test_a_caught_error_is_not_reported(ip: Any) -> None:
    body = "x = torch.ones(3, requires_grad=True)\ntry:\n    x.numpy()\nexcept RuntimeError:\n    pass\n"
    assert serious(diagnose(ip, body)) == []


# -- grad-summed --------------------------------------------------------------------------------
def test_grad_summed_note_names_the_backward_line_and_the_count(ip: Any) -> None:
    body = ("w = torch.ones(3, requires_grad=True)\nfor i in range(5):\n    loss = (w * (i + 1)).sum()\n"
            "    loss.backward()\nprint(w.grad)\n")
    report = diagnose(ip, body)
    d = one(report, "grad-summed", "note")
    assert (d.line, d.names) == (line_of(body, "print(w.grad)"), ("w",))
    assert f"`loss.backward()` at line {line_of(body, 'loss.backward()')} ran 5 times" in d.message
    assert "sum of 5 gradients" in d.message and "accumulation" in d.message
    assert serious(report) == []


def test_grad_summed_counts_backward_calls_on_two_lines(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\n(w * 2).sum().backward()\n(w * 3).sum().backward()\ng = w.grad\n"
    d = one(diagnose(ip, body), "grad-summed", "note")
    assert d.line == 4 and "sum of 2 gradients: backward ran 2 times (lines 2, 3)" in d.message


@pytest.mark.parametrize("body", [
    # gradient accumulation done right: four micro-batches per step, .grad cleared after each step
    "model = torch.nn.Linear(3, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\ndata = torch.randn(8, 3)\n"
    "for i in range(8):\n    loss = model(data[i:i+1]).pow(2).mean() / 4\n    loss.backward()\n"
    "    if (i + 1) % 4 == 0:\n        opt.step()\n        opt.zero_grad()\nprint(model.weight.grad)\n",
    # an ordinary training loop
    "model = torch.nn.Linear(3, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\nfor i in range(6):\n"
    "    opt.zero_grad()\n    loss = model(torch.randn(4, 3)).pow(2).mean()\n    loss.backward()\n    opt.step()\n"
    "print(model.weight.grad)\n",
    # a manual update reads .grad each step
    "w = torch.ones(3, requires_grad=True)\nfor i in range(4):\n    (w * w).sum().backward()\n"
    "    with torch.no_grad():\n        w -= 0.1 * w.grad\n    w.grad = None\n",
    # one backward, one read
    "w = torch.ones(3, requires_grad=True)\n(w * 2).sum().backward()\nprint(w.grad)\n",
])
def test_grad_summed_is_silent_when_grad_holds_one_pass(ip: Any, body: str) -> None:
    assert "grad-summed" not in kinds(diagnose(ip, body))


# -- the seed tutorial --------------------------------------------------------------------------
def _is_output(chunk: str) -> bool:
    """A blank-line separated chunk of the seed that is printed output, not code.

    (A chunk of comments only is markdown: no cell of the seed has one.)
    """
    try:
        tree = ast.parse(chunk)
    except SyntaxError:
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            return True  # `z:  tensor([5, 2, 3, 4])`
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            if (isinstance(func, ast.Name) and func.id == "tensor") or (
                    isinstance(func, ast.Attribute) and func.attr == "Size"):
                return True
    return False


def seed_cells() -> list[tuple[str, str]]:
    """(In[n] label, code) for every code cell of the seed tutorial, in order, read from its text."""
    text = SEED.read_text()
    parts = re.split(r"^In \[([^\]]*)\]:\n", text, flags=re.M)
    cells = []
    for label, block in zip(parts[1::2], parts[2::2], strict=True):
        kept: list[str] = []
        for chunk in re.split(r"\n\s*\n", block):
            if _is_output(chunk) or all(line.startswith("#") for line in chunk.strip().splitlines()):
                break
            kept.append(chunk)
        cells.append((label, "\n\n".join(kept).rstrip() + "\n"))
    return cells


def seed(label: str, nth: int = 0) -> str:
    return [code for lab, code in seed_cells() if lab == label][nth]


def test_seed_parser_reads_the_cells_as_written() -> None:
    assert seed("14").startswith("# Create a tensor x with entries [1,2,3,4]\nx = torch.tensor([1,2,3,4])\n\n")
    assert seed("14").rstrip().endswith("print('x: ',x)")
    assert seed("None", 2) == "# Try calling backward()\nb.backward()\n"


def test_seed_in14_alias_write_names_x_and_z_at_the_write(ip: Any) -> None:
    body = seed("14")
    d = one(diagnose(ip, body), "alias-write", "warning")
    assert (d.line, d.code, set(d.names)) == (line_of(body, "z[0] = 5"), "z[0] = 5", {"x", "z"})
    assert d.line == 8


def test_seed_in8_shared_memory_names_arr_and_x(ip: Any) -> None:
    run(ip, seed("5"))
    report, _ = report_of(ip, seed("8"))
    d = one(report, "shared-memory", "note")
    assert (d.line, set(d.names)) == (line_of(seed("8"), "arr = x.numpy()"), {"arr", "x"})
    assert serious(report) == []


@pytest.mark.parametrize("label", ["15", "16"])
def test_seed_clone_and_add_cells_get_no_warning(ip: Any, label: str) -> None:
    report = diagnose(ip, seed(label))
    assert serious(report) == []


def test_seed_closing_cells_as_one_cell_point_at_the_rebuild(ip: Any) -> None:
    body = "\n".join(seed("None", n) for n in range(3))
    d = one(diagnose(ip, body), "backward-no-grad-fn", "error")
    assert d.line == line_of(body, "b.backward()")
    assert f"rebuilt at line {line_of(body, 'b = torch.tensor(b.detach().numpy())')}" in d.message


def test_seed_closing_cells_run_separately_point_at_the_rebuild(ip: Any) -> None:
    run(ip, seed("None", 0))
    report_of(ip, seed("None", 1))
    report, cell = report_of(ip, seed("None", 2))
    assert cell.error is not None and "does not have a grad_fn" in str(cell.error)
    d = one(report, "backward-no-grad-fn", "error")
    assert d.line == line_of(seed("None", 2), "b.backward()")
    rebuilt = line_of(seed("None", 1), "b = torch.tensor")
    assert f"line {rebuilt}" in d.message and "b = torch.tensor(b.detach().numpy())" in d.message
    assert "b" in d.names


def test_every_seed_cell_in_order_warns_only_at_in14(ip: Any) -> None:
    for label, code in seed_cells():
        if label == "None":
            continue  # the closing cells end in an error on purpose: tested above
        report, cell = report_of(ip, code)
        assert cell.error is None, (label, cell.error)
        expected = ["alias-write"] if label == "14" else []
        assert serious(report) == expected, (label, [(d.kind, d.line, d.message) for d in report.diagnostics])
