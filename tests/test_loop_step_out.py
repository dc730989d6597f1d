"""A training loop runs unwatched once its first steps were recorded (capture/optimizers.py, issue 24).

What a stepped-out iteration can observe must be what a plain one observes: the tracer, the
torch-function mode stack, frames, warnings' locations, the RNG stream and every value; what the report
keeps of it (a training row per step) and says about it ("steps 3–20 ran unwatched") is checked too.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from conftest import report_of, run

from autograd_magic.capture.optimizers import RECORDED_STEPS
from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text, summary_line
from autograd_magic.views.widget import payload

SETUP = ("import sys, inspect, warnings\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(3, 2)\n"
         "opt = torch.optim.SGD(model.parameters(), lr=0.1)\nseen = []\n")
PROBED_LOOP = """for step in range(8):
    opt.zero_grad()
    noise = torch.rand(4, 3)
    loss = model(noise).pow(2).mean()
    loss.backward()
    opt.step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.nn.functional.softmax(torch.ones(2, 2))
    frame = inspect.currentframe()
    seen.append(dict(trace=sys.gettrace(), profile=sys.getprofile(), modes=torch._C._len_torch_function_stack(),
                     noise=noise.tolist(), loss=loss.item(), grad=model.weight.grad.tolist(),
                     warned=[(w.filename == frame.f_code.co_filename, w.lineno, str(w.message)) for w in caught],
                     where=(frame.f_code.co_name, frame.f_lineno, inspect.stack()[0].function)))
after = torch.rand(2).tolist()
params = [p.tolist() for p in model.parameters()]
"""
LOOP = ("for step in range(20):\n    opt.zero_grad()\n    loss = model(data).pow(2).mean()\n"
        "    loss.backward()\n    opt.step()\n")


def _plain_and_recorded(ip: Any, body: str, options: str = "") -> tuple[dict[str, Any], dict[str, Any], Any]:
    """``body`` run plain, then recorded, each after SETUP; the namespace after each, and the report."""
    run(ip, SETUP)
    assert run(ip, body).error is None
    plain = dict(ip.user_ns)
    run(ip, SETUP)
    report, cell = report_of(ip, body, options)
    assert cell.error is None
    return plain, dict(ip.user_ns), report


def test_an_unwatched_iteration_sees_what_a_plain_one_sees(ip: Any) -> None:
    base = torch._C._len_torch_function_stack()
    plain, magic, report = _plain_and_recorded(ip, PROBED_LOOP)
    # the recorded steps saw our mode; the loop is left as the last of them ends (the probe runs after
    # opt.step()), and from there on nothing differs at all
    assert [s["modes"] for s in magic["seen"]] == [base + 1] * (RECORDED_STEPS - 1) + [base] * (9 - RECORDED_STEPS)
    for was, now in zip(plain["seen"], magic["seen"], strict=True):
        assert {**now, "modes": was["modes"]} == was
    assert all(s["trace"] is None and s["profile"] is None for s in magic["seen"])
    assert plain["seen"][-1]["warned"]  # the probe did see a warning, at the cell's own line
    assert magic["after"] == plain["after"] and magic["params"] == plain["params"]  # the RNG stream, the values
    assert report.loop_left_after == RECORDED_STEPS and report.loop_unwatched == 8 - RECORDED_STEPS


def test_the_second_iteration_is_recorded_up_to_its_optimizer_step(ip: Any) -> None:
    """The loop is left at the pre-hook of the optimizer's second step: that iteration's forward and backward
    were recorded (the checks between two backward calls need them), its step's in-place updates were not
    (the first step's already show them)."""
    run(ip, SETUP + "data = torch.ones(4, 3)")
    report, cell = report_of(ip, LOOP)
    assert cell.error is None
    assert [op.name for op in report.ops if op.code == "loss.backward()"] == ["backward", "backward"]
    assert [op.name for op in report.ops if op.inplace] == ["add_", "add_"]  # step 1's weight and bias
    assert report.loop_left_after == 2 and report.loop_unwatched == 18
    assert report.ops_unwatched_steps == 19  # step 2's insides too, said as such
    assert "not counted; so did the optimizer step of step 2)" in summary_line(report)


TWO_OPTIMIZERS = """for step in range(10):
    opt.zero_grad()
    loss = model(torch.rand(4, 3)).pow(2).mean()
    loss.backward()
    opt.step()
    seen.append(torch._C._len_torch_function_stack())
    other_opt.zero_grad()
    other_loss = other(torch.rand(4, 3)).sum().abs()
    other_loss.backward()
    other_opt.step()
    seen.append(torch._C._len_torch_function_stack())
values = [p.tolist() for p in [*model.parameters(), *other.parameters()]] + [torch.rand(1).item()]
"""


def test_a_loop_of_two_optimizers_is_left_when_the_first_comes_round(ip: Any) -> None:
    """A GAN-like loop: two optimizers of one class. Its first iteration is recorded whole (both steps),
    the loop is left as the first optimizer steps again; the values and the RNG stream are the plain ones."""
    base = torch._C._len_torch_function_stack()
    other = "other = torch.nn.Linear(3, 1)\nother_opt = torch.optim.SGD(other.parameters(), lr=0.05)\n"
    run(ip, SETUP + other)
    assert run(ip, TWO_OPTIMIZERS).error is None
    plain = ip.user_ns["values"]
    run(ip, SETUP + other)
    report, cell = report_of(ip, TWO_OPTIMIZERS)
    assert cell.error is None and ip.user_ns["values"] == plain
    assert ip.user_ns["seen"] == [base + 1, base + 1] + [base] * 18
    assert report.loop_left_after == 3 and report.loop_unwatched == 17
    assert {op.code for op in report.ops if op.inplace} == {"opt.step()", "other_opt.step()"}


def test_the_optimizers_own_hash_and_eq_are_not_called(ip: Any) -> None:
    """Telling a loop has come round compares optimizers by identity: a subclass's __hash__/__eq__ (user code)
    runs as often as plain, never."""
    run(ip, SETUP + "data = torch.ones(4, 3)\ncalls = []\n"
                    "class Mine(torch.optim.SGD):\n"
                    "    def __hash__(self):\n        calls.append('hash')\n        return 1\n"
                    "    def __eq__(self, other):\n        calls.append('eq')\n        return self is other\n"
                    "opt = Mine(model.parameters(), lr=0.1)")
    report, cell = report_of(ip, LOOP)
    assert cell.error is None and report.loop_left_after == 2  # the loop was left as it came round
    assert ip.user_ns["calls"] == []


def test_the_statement_after_the_loop_is_recorded_again(ip: Any) -> None:
    run(ip, SETUP + "data = torch.ones(4, 3)")
    report, cell = report_of(ip, LOOP + "depth = torch._C._len_torch_function_stack()\nfinal = loss * 2\n")
    assert cell.error is None
    assert ip.user_ns["depth"] == torch._C._len_torch_function_stack() + 1  # our mode is back
    assert any(op.code == "final = loss * 2" for op in report.ops)
    assert report.tensors["final"].grad_fn == "MulBackward0"


CNN_LOOP = """import torch.nn as nn
torch.manual_seed(0)
images = torch.randn(8, 1, 6, 6)
labels = (images.mean(dim=(1, 2, 3)) > 0).long()
model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
for step in range(6):
    optimizer.zero_grad()
    loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
"""


def test_the_last_unwatched_loss_is_not_drawn_as_a_result_without_backward(ip: Any) -> None:
    report, cell = report_of(ip, CNN_LOOP)
    assert cell.error is None
    assert len(report.graphs) == 1  # the loop's graph; the last step's loss had its backward, unseen
    assert "no backward() from it" not in render_text(report)
    report, cell = report_of(ip, CNN_LOOP + "check = loss_fn(model(images), labels)\n")
    assert cell.error is None  # a result made after the loop, never backwarded, is still drawn as one
    assert len(report.graphs) == 2 and "no backward() from it" in render_text(report)


def test_unwatched_steps_keep_a_training_row_each_with_the_plain_loss(ip: Any) -> None:
    plain, _, report = _plain_and_recorded(ip, PROBED_LOOP)
    training = report.training
    assert training is not None and training.calls == 8 and training.unwatched_from == RECORDED_STEPS + 1
    assert [s.step for s in training.steps] == list(range(1, 9))
    assert [s.loss for s in training.steps] == [float(f"{s['loss']:.4g}") for s in plain["seen"]]
    assert all(set(s.grad_norms) == {"model.weight", "model.bias"} for s in training.steps)
    assert any(s.update_ratios for s in training.steps[RECORDED_STEPS:])  # update/weight ratios too


def test_every_view_says_which_steps_ran_unwatched(ip: Any) -> None:
    run(ip, SETUP + "data = torch.ones(4, 3)")
    report, _ = report_of(ip, LOOP)
    said = "steps 3–20 ran unwatched: loss and gradient norms kept, their torch calls not counted"
    assert said in summary_line(report) and said in render_text(report) and said in render_html(report)
    widget = payload(report)
    assert said in widget["summary"] and widget["unwatched_text"].startswith(said)
    assert "steps from 3 on read at their optimizer step" in render_text(report)


@pytest.mark.parametrize("how", ["option", "config"])
def test_every_step_keeps_every_iteration_watched(ip: Any, how: str) -> None:
    base = torch._C._len_torch_function_stack()
    run(ip, SETUP + "data = torch.ones(4, 3)")
    probe = LOOP.replace("    opt.step()\n", "    opt.step()\n    seen.append(torch._C._len_torch_function_stack())\n")
    if how == "config":
        run(ip, "%config AutogradMagic.every_step = True")
    try:
        report, cell = report_of(ip, probe, "--every-step" if how == "option" else "")
    finally:
        run(ip, "%config AutogradMagic.every_step = False")
    assert cell.error is None
    assert ip.user_ns["seen"] == [base + 1] * 20
    assert report.loop_unwatched == 0 and report.ops_unwatched_steps == 20 - RECORDED_STEPS
    assert report.training is not None and report.training.unwatched_from is None


def test_a_loop_without_a_torch_optimizer_is_watched_throughout(ip: Any) -> None:
    base = torch._C._len_torch_function_stack()
    run(ip, "w = torch.ones(3, requires_grad=True)\nseen = []")
    report, cell = report_of(ip, "for step in range(12):\n    loss = (w * w).sum()\n    loss.backward()\n"
                                 "    with torch.no_grad():\n        w -= 0.1 * w.grad\n    w.grad = None\n"
                                 "    seen.append(torch._C._len_torch_function_stack())\n")
    assert cell.error is None
    assert ip.user_ns["seen"] == [base + 1] * 12 and report.loop_unwatched == 0


def test_an_error_in_an_unwatched_step_is_plain_and_said_to_come_after_recording(ip: Any) -> None:
    body = LOOP.replace("    opt.step()\n", "    opt.step()\n    if step == 9:\n        model(torch.ones(2, 5))\n")
    run(ip, SETUP + "data = torch.ones(4, 3)")
    plain = run(ip, body).error
    plain_frames = _traceback_lines(sys.last_traceback)
    run(ip, SETUP + "data = torch.ones(4, 3)")
    report, cell = report_of(ip, body)
    assert type(cell.error) is type(plain) and str(cell.error) == str(plain)
    frames = _traceback_lines(sys.last_traceback)
    assert _from_cell(frames) == _from_cell(plain_frames)  # the cell's line and torch's own frames, as plain
    user = [tb for tb in _frames(sys.last_traceback) if _is_cell(tb.tb_frame.f_code.co_filename)]
    assert user and user[-1].tb_frame.f_locals["step"] == 9  # %debug starts there, with the user's locals
    error = next(d for d in report.diagnostics if d.severity == "error")
    assert "model(torch.ones(2, 5))" in error.code and "raised after recording stopped" in error.message
    assert "ran unwatched from the optimizer step of step 2 on" in error.message


def test_a_mode_the_loop_leaves_open_stays_above_ours(ip: Any) -> None:
    run(ip, SETUP + "data = torch.ones(4, 3)\nfrom torch.overrides import TorchFunctionMode\n"
                    "class Mine(TorchFunctionMode):\n    pass\nmine = Mine()")
    body = LOOP.replace("    opt.step()\n", "    opt.step()\n    if step == 19:\n        mine.__enter__()\n")
    depth = torch._C._len_torch_function_stack()
    _, cell = report_of(ip, body + "top = torch._C._get_function_stack_at(torch._C._len_torch_function_stack() - 1)\n"
                                   "inside = torch._C._len_torch_function_stack()\n")
    try:
        assert cell.error is None
        assert ip.user_ns["top"] is ip.user_ns["mine"] and ip.user_ns["inside"] == depth + 2  # ours below it
        assert torch._C._len_torch_function_stack() == depth + 1  # the cell left its mode, as plain would
    finally:
        run(ip, "mine.__exit__(None, None, None)")


def _frames(tb: Any) -> list[Any]:
    found = []
    while tb is not None:
        found.append(tb)
        tb = tb.tb_next
    return found


def _from_cell(frames: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """From the innermost frame of the cell's own code (the magic's cell adds its one-line call above)."""
    return frames[max(i for i, f in enumerate(frames) if f[0] == "<cell>"):]


def _is_cell(filename: str) -> bool:
    return filename.startswith("<ipython-input") or "ipykernel" in filename


def _traceback_lines(tb: Any) -> list[tuple[str, int, str]]:
    """Each frame's file (a cell's as "<cell>": the two runs are two cells), line and function."""
    return [("<cell>" if _is_cell(t.tb_frame.f_code.co_filename) else t.tb_frame.f_code.co_filename, t.tb_lineno,
             t.tb_frame.f_code.co_name) for t in _frames(tb)]


def test_a_recorder_run_as_one_code_object_never_leaves_a_loop() -> None:
    """A script (``autograd-magic run``) is one code object: nothing would put our mode back after its loop."""
    from autograd_magic.capture import Recorder

    base = torch._C._len_torch_function_stack()
    namespace: dict[str, Any] = {"torch": torch}
    exec(SETUP + "data = torch.ones(4, 3)", namespace)
    probe = LOOP.replace("    opt.step()\n", "    opt.step()\n    seen.append(torch._C._len_torch_function_stack())\n")
    with Recorder(source=probe, filename="<script>", namespace=namespace, first_line=1) as recorder:
        exec(compile(probe, "<script>", "exec"), namespace)
    assert namespace["seen"] == [base + 1] * 20
    assert recorder.trace is not None and recorder.trace.loop_unwatched == 0


def test_a_short_unwatched_loop_keeps_a_row_for_every_step(ip: Any) -> None:
    """20 steps of a tiny model, whose reads cost as much as its steps: up to `MIN_ROWS` rows the budget
    never thins, so a learner's plot has every point whatever the machine's speed."""
    run(ip, SETUP + "data = torch.ones(4, 3)")
    report, cell = report_of(ip, LOOP)
    assert cell.error is None and report.training is not None
    assert report.training.stride == 1 and [s.step for s in report.training.steps] == list(range(1, 21))


def test_an_unwatched_loop_of_cheap_steps_is_thinned_to_its_read_budget(ip: Any) -> None:
    """A 3-by-2 model's step costs about what reading its norms does: past MIN_ROWS kept steps the stride
    doubles (at once as far as the budget needs), over the loop's whole span, and the heading says why."""
    from autograd_magic.capture.training import MIN_ROWS
    from autograd_magic.views.training import heading

    run(ip, SETUP + "data = torch.ones(4, 3)")
    report, cell = report_of(ip, LOOP.replace("range(20)", "range(400)"))
    assert cell.error is None
    training = report.training
    assert training is not None and training.calls == 400 and training.stride >= 2
    steps = [s.step for s in training.steps]
    assert len(steps) >= MIN_ROWS // 2 and steps[0] == 1 and steps[-1] > 400 - training.stride
    assert all(b - a == training.stride for a, b in zip(steps, steps[1:], strict=False))
    assert "reads held to 2% of its time" in heading(training)
