"""%%autograd --gradcheck (issue 12, item 4): a custom autograd.Function's backward against finite differences.

A wrong backward is caught with the Function's name, the calling line and the wrong input; a correct one
(every Function of PyTorch's autograd_function_db that torch.autograd.gradcheck passes) stays silent;
without the option nothing is looked at, and with it the re-run forward leaves no trace in the cell.
"""

from __future__ import annotations

import gc
import json
import warnings
from typing import Any

import pytest
import torch
from conftest import kinds, report_of, run
from crossref_cases import load_databases

from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text

CUBE = """
calls = []
class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        calls.append(1)
        ctx.save_for_backward(x)
        return x ** 3
    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return BACKWARD
"""
RIGHT = "3 * x ** 2 * grad"


def cube(backward: str = RIGHT) -> str:
    return CUBE.replace("BACKWARD", backward)


USE = "x = torch.tensor([0.5, -1.5, 2.0], requires_grad=True)\ny = Cube.apply(x)\ny.sum().backward()"


def gradchecks(report: Any) -> list[Any]:
    return [d for d in report.diagnostics if d.kind == "gradcheck"]


def warnings_of(report: Any) -> list[Any]:
    return [d for d in gradchecks(report) if d.severity == "warning"]


# -- caught ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backward", ["3 * x * grad", "3 * x ** 2", "-3 * x ** 2 * grad"],
                         ids=["missing-factor", "forgotten-grad-output", "wrong-sign"])
def test_a_wrong_backward_is_caught_with_name_line_and_input(ip: Any, backward: str) -> None:
    report, cell = report_of(ip, cube(backward) + USE, "--gradcheck")
    assert cell.error is None
    [found] = warnings_of(report)
    assert found.line == 13 and found.code == "y = Cube.apply(x)" and found.names == ("Cube",)
    assert "`Cube`" in found.message and "for `x`" in found.message
    assert "expected [" in found.message and "(finite differences)" in found.message and "(backward)" in found.message
    assert "Fix: check the backward of `Cube`: d/d x" in found.message
    assert "forward was run again on float64 copies" in found.message


def test_a_missing_factor_is_shown_as_plain_derivatives(ip: Any) -> None:
    """With a grad_output of ones the numbers are d/dx x**3 = 3x**2 against the backward's 3x."""
    report, _ = report_of(ip, cube("3 * x * grad") + USE, "--gradcheck")
    [found] = warnings_of(report)
    assert "a grad_output of ones" in found.message
    assert "expected [0.75, 6.75, 12] (finite differences), got [1.5, -4.5, 6] (backward)" in found.message


def test_a_forgotten_grad_output_is_shown_with_the_random_one_that_reveals_it(ip: Any) -> None:
    report, _ = report_of(ip, cube("3 * x ** 2") + USE, "--gradcheck")
    [found] = warnings_of(report)
    assert "the same random grad_output" in found.message and "ones" not in found.message


def test_the_mismatch_names_only_the_wrong_input_of_several(ip: Any) -> None:
    body = """
class Mul(torch.autograd.Function):
    @staticmethod
    def forward(a, b):
        return a * b
    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad * b, grad
a = torch.randn(2, 3, requires_grad=True)
b = torch.randn(2, 3, requires_grad=True)
Mul.apply(a, b).sum().backward()
"""
    report, _ = report_of(ip, body, "--gradcheck")
    [found] = warnings_of(report)
    assert "for `b`:" in found.message and "  b: expected" in found.message and "  a:" not in found.message
    assert "d/d b (the value at position 1 of backward's return)" in found.message


def test_a_function_called_in_a_loop_is_checked_once_per_call_site(ip: Any) -> None:
    body = cube("3 * x * grad") + ("x = torch.tensor([0.5, -1.5, 2.0], requires_grad=True)\n"
                                   "z = Cube.apply(x * 2)\nfor _ in range(20):\n    y = Cube.apply(x)")
    report, _ = report_of(ip, body, "--gradcheck")
    assert [d.line for d in warnings_of(report)] == [13, 15]


# -- silent on correct Functions ------------------------------------------------------------------------
def test_a_correct_backward_is_silent_and_says_it_matched(ip: Any) -> None:
    report, _ = report_of(ip, cube() + USE, "--gradcheck")
    assert warnings_of(report) == []
    [note] = gradchecks(report)
    assert note.severity == "note" and "the backward of `Cube` matches finite differences for `x`" in note.message


SHAPES = """
class Clamp(torch.autograd.Function):          # new style, a non-tensor argument, a kink at the bounds
    @staticmethod
    def forward(x, low, high):
        return x.clamp(low, high)
    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.low, ctx.high = inputs
        ctx.save_for_backward(x)
    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * ((x >= ctx.low) & (x <= ctx.high)), None, None
class Split(torch.autograd.Function):          # old style, two outputs, once_differentiable
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin(), x.exp()
    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ga, gb):
        x, = ctx.saved_tensors
        return ga * x.cos() + gb * x.exp()
class Relu(torch.autograd.Function):           # evaluated exactly at its kink
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)
    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return grad * (x > 0)
class Noisy(torch.autograd.Function):          # a forward that draws random numbers
    @staticmethod
    def forward(ctx, x):
        mask = (torch.rand(x.shape) > 0.3).to(x.dtype)
        ctx.save_for_backward(mask)
        return x * mask
    @staticmethod
    def backward(ctx, grad):
        mask, = ctx.saved_tensors
        return grad * mask
x = torch.tensor([-1.0, 0.0, 0.5, 3.0], requires_grad=True)
w = torch.randn(2, 2, requires_grad=True)
a = Clamp.apply(x, -0.5, 1.0)
s, e = Split.apply(w)
r = Relu.apply(x)
n = Noisy.apply(x)
(a.sum() + s.sum() + e.sum() + r.sum() + n.sum()).backward()
"""


def test_correct_functions_of_every_shape_are_silent(ip: Any) -> None:
    report, cell = report_of(ip, SHAPES, "--gradcheck")
    assert cell.error is None
    assert warnings_of(report) == []
    matched = [d.names[0] for d in gradchecks(report) if "matches finite differences" in d.message]
    assert sorted(matched) == ["Clamp", "Noisy", "Relu", "Split"]


def _passes_gradcheck(op: Any, sample: Any) -> bool:
    wanted = [i for i, a in enumerate(sample.args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def call(first: torch.Tensor, *rest: torch.Tensor) -> Any:
        args = list(sample.args)
        for i, value in zip(wanted, rest, strict=True):
            args[i] = value
        return op.op(first, *args, **sample.kwargs)

    tensors = (sample.input, *(sample.args[i] for i in wanted))
    try:
        return bool(torch.autograd.gradcheck(call, tensors, raise_exception=False))
    except Exception:
        return False


def test_every_function_of_torchs_autograd_function_db_that_gradcheck_passes_is_silent(ip: Any) -> None:
    _, database = load_databases()
    checked, caught = [], []
    for op in database:
        torch.manual_seed(0)
        for sample in list(op.sample_inputs_func(op, "cpu", torch.float64, True))[:3]:
            if not _passes_gradcheck(op, sample):
                continue
            ip.user_ns.update(op=op.op, inp=sample.input, args=sample.args, kwargs=sample.kwargs)
            report, cell = report_of(ip, "out = op(inp, *args, **kwargs)", "--gradcheck")
            assert cell.error is None, op.name
            caught += [(op.name, d.message) for d in warnings_of(report)]
            checked += [op.name for d in gradchecks(report) if "matches finite differences" in d.message]
    assert caught == []
    assert len(set(checked)) >= 9  # the check really ran: most of the database's Functions pass gradcheck


def test_the_functions_gradcheck_rejects_in_that_database_are_caught(ip: Any) -> None:
    _, database = load_databases()
    [scale] = [op for op in database if op.name == "ScaleGradGenVmapAutogradFunction"]  # backward scales by 3.14
    sample = next(iter(scale.sample_inputs_func(scale, "cpu", torch.float64, True)))
    ip.user_ns.update(op=scale.op, inp=sample.input, args=sample.args, kwargs=sample.kwargs)
    report, _ = report_of(ip, "out = op(inp, *args, **kwargs)", "--gradcheck")
    [found] = warnings_of(report)
    assert found.names == ("ScaleGradGenVmap",) and found.line == 1


# -- what could not be checked is said --------------------------------------------------------------------
@pytest.mark.parametrize(("use", "reason"), [
    ("x = torch.randn(40, 40, requires_grad=True)\nCube.apply(x)", "1,600 elements"),
    ("x = torch.tensor([1., 2.])\nCube.apply(x)", "none of its floating-point inputs required grad"),
    ("x = torch.ones(2, dtype=torch.complex64, requires_grad=True)\nCube.apply(x)", "complex"),
], ids=["too-big", "no-grad", "complex"])
def test_an_unchecked_call_is_a_note_saying_why(ip: Any, use: str, reason: str) -> None:
    report, _ = report_of(ip, cube() + use, "--gradcheck")
    [note] = gradchecks(report)
    assert note.severity == "note" and "could not check `Cube`" in note.message and reason in note.message


def test_a_backward_that_raises_is_a_note_not_a_crash(ip: Any) -> None:
    report, cell = report_of(ip, cube("grad * undefined_name") + "x = torch.ones(2, requires_grad=True)\n"
                                                           "y = Cube.apply(x)", "--gradcheck")
    assert cell.error is None
    [note] = gradchecks(report)
    assert note.severity == "note" and "its backward raised NameError" in note.message


def test_a_cell_without_custom_functions_says_nothing_was_checked(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()", "--gradcheck")
    [note] = gradchecks(report)
    assert note.severity == "note" and note.line is None and "no custom autograd.Function" in note.message


# -- invisible -----------------------------------------------------------------------------------------
def test_without_the_option_nothing_is_checked_and_forward_runs_as_often_as_plain(ip: Any) -> None:
    plain = run(ip, cube("3 * x * grad") + USE)
    plain_calls = len(ip.user_ns["calls"])
    report, _ = report_of(ip, cube("3 * x * grad") + USE)
    assert plain.error is None and len(ip.user_ns["calls"]) == plain_calls == 1
    assert "gradcheck" not in kinds(report)
    report, _ = report_of(ip, cube("3 * x * grad") + USE, "--gradcheck")
    assert len(ip.user_ns["calls"]) > plain_calls  # the option does call forward again (the README says so)


LOUD = """
import random, warnings
class Loud(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        print("forward ran")
        warnings.warn("forward warns")
        noise = torch.rand(1).item() + random.random() + np.random.rand()
        ctx.save_for_backward(x)
        return x * 2 + 0 * noise
    @staticmethod
    def backward(ctx, grad):
        print("backward ran")
        return grad * 2
"""


def test_the_rerun_prints_warns_and_draws_nothing_the_cell_can_see(ip: Any) -> None:
    body = ("x = torch.ones(3, requires_grad=True)\ny = Loud.apply(x)\ny.sum().backward()\n"
            "_ = torch.set_grad_enabled(False)")
    probe = "(torch.rand(2).tolist(), random.random(), np.random.rand(), torch.is_grad_enabled())"
    seen = []
    for prefix in ("", "%%autograd -q --gradcheck\n"):
        run(ip, "torch.manual_seed(0); import random; random.seed(0); np.random.seed(0)")
        run(ip, LOUD)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            cell = run(ip, prefix + body)
        seen.append((cell.error, cell.stdout, [str(w.message) for w in warned], ip.ev(probe)))
        run(ip, "torch.set_grad_enabled(True)")
    assert seen[0][0] is None and seen[1] == seen[0]
    assert seen[0][1] == "forward ran\nbackward ran\n" and seen[0][2] == ["forward warns"]


def test_no_tensor_of_the_cell_is_kept_alive(ip: Any) -> None:
    run(ip, cube("3 * x * grad"))
    result = run(ip, "%%autograd -q --gradcheck\nx = torch.randn(5, requires_grad=True)\ny = Cube.apply(x * 1)\n"
                     "refs = [__import__('weakref').ref(t) for t in (x, y)]")
    assert result.error is None
    refs = ip.user_ns["refs"]
    del ip.user_ns["x"], ip.user_ns["y"]
    gc.collect()
    assert [r() for r in refs] == [None, None]


# -- the option ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["--gradcheck=yes", "--gradcheck 3", "--grad-check"])
def test_a_malformed_gradcheck_option_is_a_usage_error(ip: Any, line: str) -> None:
    from IPython.core.error import UsageError

    result = run(ip, f"%%autograd {line}\nran = True")
    assert isinstance(result.error, UsageError), line
    assert "usage:" in str(result.error) and "--gradcheck" in str(result.error)
    assert "ran" not in ip.user_ns


def test_the_config_trait_turns_it_on_and_the_line_magic_takes_it(ip: Any) -> None:
    run(ip, cube("3 * x * grad") + "x = torch.tensor([2., 3.], requires_grad=True)")
    try:
        run(ip, "%config AutogradMagic.gradcheck = True")
        report, _ = report_of(ip, "y = Cube.apply(x)")
    finally:
        run(ip, "%config AutogradMagic.gradcheck = False")
    assert len(warnings_of(report)) == 1
    run(ip, "%autograd -q -o rep --gradcheck y = Cube.apply(x)")
    assert [d.line for d in warnings_of(ip.user_ns["rep"])] == [1]


def test_text_html_and_json_views_show_the_mismatch(ip: Any) -> None:
    report, _ = report_of(ip, cube("3 * x * grad") + USE, "--gradcheck")
    text, html = render_text(report), render_html(report)
    data = json.loads(json.dumps(report.to_dict()))
    assert "[gradcheck]" in text and "Cube" in text and "finite differences" in text
    assert "gradcheck" in html and "Cube" in html and "finite differences" in html
    [found] = [d for d in data["diagnostics"] if d["kind"] == "gradcheck"]
    assert found["severity"] == "warning" and found["names"] == ["Cube"] and found["line"] == 13


STRAIGHT_THROUGH = """
class RoundST(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)
    @staticmethod
    def backward(ctx, grad):
        return grad
x = torch.tensor([0.2, 1.3, -2.4], requires_grad=True)
RoundST.apply(x).sum().backward()
"""


def test_a_straight_through_estimator_is_a_note_not_a_warning(ip: Any) -> None:
    """round's derivative is 0 wherever it is defined: passing the gradient through is a choice, not a bug."""
    report, _ = report_of(ip, STRAIGHT_THROUGH, "--gradcheck")
    [found] = gradchecks(report)
    assert found.severity == "note" and "straight-through" in found.message and "`RoundST`" in found.message
