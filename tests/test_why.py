"""report.why(name): why a gradient is None, zero, or a sum (issue 12, item 3), one cell per answer."""

from __future__ import annotations

import json
from typing import Any

from conftest import report_of
from test_replay import SEED


def why(ip: Any, body: str, name: str) -> str:
    report, _ = report_of(ip, body)
    return str(report.why(name))


def test_seed_x_grad_is_the_sum_of_the_two_paths(ip: Any) -> None:
    assert why(ip, SEED, "x") == ("x.grad is -1, from backward() at line 6. 2 paths met there: "
                                  "1 (from var2 (AddBackward0)) + -2 (from var1 (MulBackward0)) = -1.")


def test_an_intermediate_is_not_a_leaf_and_names_its_leaves(ip: Any) -> None:
    answer = why(ip, SEED, "z")
    assert answer.startswith("z.grad is None because z is not a leaf: it was made by `var2 - var1` at line 5")
    assert "The leaves are x and y" in answer and "z.retain_grad()" in answer and "gradient was 1" in answer


def test_a_tensor_made_without_requires_grad(ip: Any) -> None:
    body = "x = torch.tensor([1., 2.])\nw = torch.ones(2, requires_grad=True)\n(w*x).sum().backward()"
    assert why(ip, body, "x") == ("x.grad is None because x does not require grad: it was made by torch.tensor at "
                                  "line 1 (`x = torch.tensor([1., 2.])`), which copies values into a new tensor "
                                  "with no graph behind it.")


def test_double_makes_a_non_leaf_and_the_unnamed_leaf_is_shown(ip: Any) -> None:
    answer = why(ip, "x = torch.ones(2, requires_grad=True).double()\n(x*2).sum().backward()", "x")
    assert "x is not a leaf: it was made by `torch.ones(2, requires_grad=True).double()` at line 1" in answer
    assert "The leaf is the unnamed `torch.ones(2, requires_grad=True)` of line 1" in answer


def test_seed_closing_cell_names_the_cut_detach_numpy_tensor(ip: Any) -> None:
    body = ("a = torch.tensor([1.,2.,3.],requires_grad=True)\nb = a**2\nprint(b)\n\n"
            "# Detach -> numpy -> back to torch tensor\nb = torch.tensor(b.detach().numpy())\nprint(b)\n\n"
            "# Try calling backward()\nb.backward()")
    report, cell = report_of(ip, body)
    assert cell.error is not None  # the cell still raises as it does plain
    assert report.why("a") == (
        "a.grad is None because no backward reached it: backward() at line 10 raised RuntimeError: element 0 of "
        "tensors does not require grad and does not have a grad_fn; the path was cut at line 6 by .detach() → "
        ".numpy() → torch.tensor, so no gradient can flow back through it.")
    assert report.why("b").startswith("b.grad is None because b does not require grad: it was made by torch.tensor "
                                      "at line 6")


def test_backward_on_a_different_root(ip: Any) -> None:
    body = "a = torch.ones(2, requires_grad=True)\nc = torch.ones(2, requires_grad=True)\n(a*2).sum().backward()"
    assert why(ip, body, "c") == ("c.grad is None because backward was called on `(a*2).sum().backward()` (line 3), "
                                  "whose graph does not reach c (c was not used to compute it).")


def test_no_backward_in_the_cell(ip: Any) -> None:
    assert why(ip, "w = torch.tensor(2., requires_grad=True)\nh = w * 3", "w") == \
        "w.grad is None because no backward() ran in this cell."


def test_a_value_made_under_no_grad(ip: Any) -> None:
    body = "w = torch.tensor(2., requires_grad=True)\nwith torch.no_grad():\n    h = w * 3\n(h * w).backward()"
    assert why(ip, body, "h") == ("h.grad is None because h does not require grad: it was made under "
                                  "torch.no_grad() at line 3.")


def test_a_zero_gradient_says_where_it_stopped(ip: Any) -> None:
    answer = why(ip, "w = torch.tensor([-1., -2.], requires_grad=True)\ntorch.relu(w).sum().backward()", "w")
    assert answer.startswith("w.grad is [0, 0], from backward() at line 2. It is zero because the gradient stopped "
                             "at ReluBackward0 at line 2: it got [1, 1] and sent [0, 0]")


def test_repeated_backward_calls_accumulate(ip: Any) -> None:
    answer = why(ip, "w = torch.tensor(2., requires_grad=True)\nfor _ in range(3):\n    (w * 3).backward()", "w")
    assert answer.startswith("w.grad is 9: the sum of 3 backward calls (line 3 ×3), because .grad accumulates")


def test_why_unknown_name_lists_the_known_ones_and_answers_are_in_the_json(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    assert report.why("nope") == "'nope' is not a tensor this cell left in a variable (known: var1, var2, x, y, z)."
    assert json.loads(report.to_json())["answers"]["y"] == "y.grad is 1, from backward() at line 6."


def test_a_detached_result_is_said_to_be_cut_not_made_from_tensors_without_grad(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.ones(2, requires_grad=True)\nd = (x * 2).detach()\n")
    answer = report.why("d")
    assert "made by .detach() at line 2" in answer and "cut off from the graph" in answer
    assert "do not" not in answer
