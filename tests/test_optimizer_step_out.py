"""A library optimizer's step runs without our mode once its calls have been recorded (capture/optimizers.py).

What is asserted is what the step itself can see: the torch-function mode stack, read by the
user's own step pre-hook (instance hooks run after torch's global ones, so after ours).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import torch
from conftest import report_of, run
from torch.optim import optimizer as torch_optimizer
from torch.overrides import TorchFunctionMode

from autograd_magic.capture.optimizers import RECORDED_STEPS, StepOut
from autograd_magic.views.text import summary_line

SETUP = ("model = torch.nn.Linear(3, 2)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
         "data = torch.ones(4, 3)\ndepths = []\n"
         "opt.register_step_pre_hook(lambda o, a, k: depths.append(torch._C._len_torch_function_stack()))\n")
LOOP = ("for step in range(20):\n    opt.zero_grad()\n    loss = model(data).pow(2).mean()\n"
        "    loss.backward()\n    opt.step()\n")


def _global_step_hooks() -> tuple[list[Any], list[Any]]:
    return (list(torch_optimizer._global_optimizer_pre_hooks),  # type: ignore[attr-defined]
            list(torch_optimizer._global_optimizer_post_hooks))  # type: ignore[attr-defined]


def test_a_library_step_runs_without_our_mode_after_its_recorded_calls(ip: Any) -> None:
    base = torch._C._len_torch_function_stack()
    run(ip, SETUP)
    report, cell = report_of(ip, LOOP)
    assert cell.error is None
    depths = ip.user_ns["depths"]
    # the loop is left at its second step's pre-hook (its forward and backward were recorded): from that
    # step on none sees our mode
    assert depths == [base + 1] * (RECORDED_STEPS - 1) + [base] * (21 - RECORDED_STEPS)
    # the recorded steps are still listed: the in-place updates at the user's line
    assert any(op.name == "add_" and op.code == "opt.step()" for op in report.ops)
    # record_function's marks around every step and zero_grad are no tensor work: not on the timeline
    assert not any("record_function" in op.name for op in report.ops)
    assert report.training is not None and report.training.calls == 20
    # and the call count says what it leaves out
    assert report.ops_unwatched_steps == 21 - RECORDED_STEPS
    assert (f"steps {RECORDED_STEPS + 1}–20 ran unwatched: loss and gradient norms kept, their torch calls not "
            "counted" in summary_line(report))


def test_the_loop_ends_with_the_same_parameters_as_a_plain_run(ip: Any) -> None:
    adam = SETUP.replace("torch.optim.SGD(model.parameters(), lr=0.1)", "torch.optim.Adam(model.parameters())")
    run(ip, "torch.manual_seed(3)\n" + adam)
    run(ip, LOOP)
    plain = [p.detach().clone() for p in ip.user_ns["model"].parameters()]
    run(ip, "torch.manual_seed(3)\n" + adam)
    run(ip, "%%autograd -q\n" + LOOP)
    magic = list(ip.user_ns["model"].parameters())
    assert all(torch.equal(a, b) for a, b in zip(plain, magic, strict=True))


def test_no_global_step_hook_is_left_after_the_cell(ip: Any) -> None:
    before = _global_step_hooks()
    run(ip, SETUP)
    run(ip, "%%autograd -q\n" + LOOP)
    assert _global_step_hooks() == before
    result = run(ip, "%%autograd -q\n" + LOOP + "raise KeyboardInterrupt")
    assert isinstance(result.error, KeyboardInterrupt)
    assert _global_step_hooks() == before


def test_a_step_that_raises_outside_our_mode_leaves_nothing_behind(ip: Any) -> None:
    base = torch._C._len_torch_function_stack()
    before = _global_step_hooks()
    run(ip, SETUP + "def fail_late(o, a, k):\n    if len(depths) > 12:\n        raise ValueError('late')\n"
                    "opt.register_step_pre_hook(fail_late)\n")
    result = run(ip, "%%autograd -q\n" + LOOP)
    assert isinstance(result.error, ValueError)  # raised while our mode was off the stack
    assert torch._C._len_torch_function_stack() == base
    assert _global_step_hooks() == before


def test_a_step_that_raised_and_was_caught_does_not_end_the_recording(ip: Any) -> None:
    """A raising step never reaches its post-hook: the next step's pre-hook puts our mode back, so only
    what ran between the two (here one forward and backward) goes unrecorded."""
    run(ip, SETUP + "def fail_once(o, a, k):\n    if len(depths) == 12:\n        raise ValueError('once')\n"
                    "opt.register_step_pre_hook(fail_once)\n")
    report, cell = report_of(ip, "for step in range(20):\n    opt.zero_grad()\n    loss = model(data).pow(2).mean()\n"
                                 "    loss.backward()\n    try:\n        opt.step()\n    except ValueError:\n"
                                 "        pass\n", "--every-step")
    assert cell.error is None
    assert report.training is not None and report.training.calls == 19  # all but the one before the next step
    base = torch._C._len_torch_function_stack()
    assert ip.user_ns["depths"][13:] == [base] * 7  # and later steps still step out


def test_a_closure_step_is_recorded_every_time(ip: Any) -> None:
    base = torch._C._len_torch_function_stack()
    run(ip, SETUP.replace("torch.optim.SGD(model.parameters(), lr=0.1)",
                          "torch.optim.LBFGS(model.parameters(), max_iter=1)"))
    closure = ("def closure():\n    opt.zero_grad()\n    loss = model(data).pow(2).mean()\n    loss.backward()\n"
               "    return loss\n")
    report, cell = report_of(ip, closure + "for step in range(12):\n    opt.step(closure)\n")
    assert cell.error is None
    assert ip.user_ns["depths"] == [base + 1] * 12  # the closure is the user's forward and backward
    assert report.training is not None and report.training.calls >= 12


def test_an_optimizer_written_in_the_cell_is_recorded_every_time(ip: Any) -> None:
    base = torch._C._len_torch_function_stack()
    mine = ("class Mine(torch.optim.Optimizer):\n    def __init__(self, params):\n"
            "        super().__init__(params, {'lr': 0.1})\n    @torch.no_grad()\n    def step(self, closure=None):\n"
            "        for group in self.param_groups:\n            for p in group['params']:\n"
            "                p -= group['lr'] * p.grad\n")
    run(ip, "%%autograd -q\n" + mine)
    run(ip, SETUP.replace("torch.optim.SGD(model.parameters(), lr=0.1)", "Mine(model.parameters())"))
    _, cell = report_of(ip, LOOP)
    assert cell.error is None
    assert ip.user_ns["depths"] == [base + 1] * 20


def test_a_mode_of_the_cell_above_ours_keeps_seeing_every_step(ip: Any) -> None:
    base = torch._C._len_torch_function_stack()
    run(ip, SETUP + "from torch.overrides import TorchFunctionMode\nclass Count(TorchFunctionMode):\n"
                    "    calls = 0\n    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
                    "        Count.calls += 1\n        return func(*args, **(kwargs or {}))\n")
    run(ip, "with Count():\n" + "".join("    " + line + "\n" for line in LOOP.splitlines()))
    plain_calls = ip.user_ns["Count"].calls
    run(ip, "Count.calls = 0\ndepths.clear()\nopt.zero_grad()")  # both runs start with no .grad
    _, cell = report_of(ip, "with Count():\n" + "".join("    " + line + "\n" for line in LOOP.splitlines()))
    assert cell.error is None
    assert ip.user_ns["depths"] == [base + 2] * 20
    assert ip.user_ns["Count"].calls == plain_calls


def test_an_error_past_the_recorded_steps_gives_torchs_versions(ip: Any) -> None:
    """The write that broke the backward was a step not looked into: the line is still named, and the
    versions printed are the ones in torch's own message, not those of an earlier, recorded step."""
    run(ip, "w = torch.randn(3, requires_grad=True)\nopt = torch.optim.SGD([w], lr=0.1)")
    report, cell = report_of(ip, "for i in range(12):\n    opt.zero_grad()\n    loss = (w * w).sum()\n"
                                 "    loss.backward(retain_graph=True)\n    opt.step()\n    if i == 10:\n"
                                 "        loss.backward()\n")
    assert isinstance(cell.error, RuntimeError)
    current, expected = re.search(r"is at version (\d+); expected version (\d+)", str(cell.error)).groups()
    found = next(d for d in report.diagnostics if d.kind == "inplace-saved-tensor")
    assert "opt.step()" in found.message and "`w`" in found.message
    assert f"version {expected}\n" in found.message and found.message.count(f"version {current}\n") == 1
    said = "raised after recording stopped: the loop ran unwatched from the optimizer step of step 2 on"
    assert said in found.message


def test_another_threads_step_never_puts_our_mode_on_its_stack() -> None:
    """The step hooks are global but the mode stack is per thread: a step finishing in another thread,
    while ours is stepped out, leaves that thread's stack alone and ours to our own post-hook."""
    mode = TorchFunctionMode()
    step_out = StepOut(mode, max_repeats=0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    depths: list[int] = []

    def other_thread_step_ends() -> None:
        step_out._after_step(opt, (opt,), {})
        depths.append(torch._C._len_torch_function_stack())

    with mode:
        step_out._before_step(opt, (opt,), {})  # taken off this thread's stack
        assert step_out.suspended and torch._C._len_torch_function_stack() == 0
        worker = threading.Thread(target=other_thread_step_ends)
        worker.start()
        worker.join()
        assert depths == [0] and step_out.suspended
        step_out._after_step(opt, (opt,), {})  # our own post-hook puts it back
        assert not step_out.suspended and torch._C._get_function_stack_at(0) is mode
    assert step_out.close() is False
