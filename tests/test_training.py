"""Gradient flow across training steps (issue 13.2): what is recorded per step, the four
diagnostics on cells that produce them, silence on healthy training code, and invisibility."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest
import test_widget
import torch
from conftest import kinds, report_of, run
from test_modules import _screenshot
from test_widget import open_view

from autograd_magic.analysis.checks.training import (
    check_constant_loss,
    check_exploding_gradients,
    check_vanishing_gradients,
)
from autograd_magic.analysis.naming import Names
from autograd_magic.capture import training as capture_training
from autograd_magic.capture import updates as capture_updates
from autograd_magic.capture.training import MAX_TRACKED
from autograd_magic.trace.events import Trace, TrainingStep, TrainingTrace
from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text
from autograd_magic.views.widget import AutogradView, payload

browser_page = test_widget.browser_page  # the chromium page fixture, shared
SETUP = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\ntorch.manual_seed(0)\n"

HEALTHY = """
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randn(16, 1)
losses = []
for step in range(30):
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    losses.append(loss.item())
"""

CLEAN: dict[str, str] = {
    "healthy training loop": HEALTHY,
    "frozen backbone with requires_grad=False": """
backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
head = nn.Linear(16, 2)
for p in backbone.parameters():
    p.requires_grad_(False)
opt = torch.optim.Adam(head.parameters(), lr=1e-3)
x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
for step in range(10):
    opt.zero_grad()
    loss = F.cross_entropy(head(backbone(x)), y)
    loss.backward()
    opt.step()
""",
    "gradient clipping with clip_grad_norm_": """
model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(64, 4), torch.randn(64, 1)
for step in range(20):
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step()
""",
    "mini-batches over a dataset, Adam": """
model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
X, Y = torch.randn(128, 3), torch.randn(128, 1)
for epoch in range(3):
    for i in range(0, 128, 32):
        opt.zero_grad()
        loss = F.mse_loss(model(X[i:i + 32]), Y[i:i + 32])
        loss.backward()
        opt.step()
""",
}

EXPLODING_TO_INF = """
w = torch.randn(3, requires_grad=True)
x = torch.randn(64, 3) * 10
y = x @ torch.tensor([1.0, -2.0, 0.5])
for i in range(40):
    loss = ((x @ w - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        w -= 1.0 * w.grad
        w.grad = None
"""

PRODUCERS: dict[str, tuple[str, str]] = {
    "exploding-gradients": (EXPLODING_TO_INF, "error"),
    "vanishing-gradients": ("""
layers = []
for _ in range(12):
    layers += [nn.Linear(16, 16), nn.Sigmoid()]
model = nn.Sequential(*layers, nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 16), torch.randn(32, 1)
for step in range(5):
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()
""", "warning"),
    "never-gets-gradient": ("""
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1)
        self.aux = nn.Linear(8, 1)  # built, never used in forward
    def forward(self, x):
        return self.head(torch.relu(self.body(x)))
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randn(16, 1)
for step in range(5):
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()
""", "warning"),
    "constant-loss": ("""
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randn(16, 1)
for step in range(5):
    opt.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
""", "warning"),
}


# -- what is recorded ----------------------------------------------------------------------------------
def test_every_step_records_the_loss_and_each_named_parameters_grad_norm(ip: Any) -> None:
    report, cell = report_of(ip, SETUP + HEALTHY)
    assert cell.error is None
    training = report.training
    assert [s.step for s in training.steps] == list(range(1, 31))  # every backward, past the detail cap
    assert training.parameters == ("model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias")
    assert [s.loss for s in training.steps] == pytest.approx(ip.user_ns["losses"], rel=1e-3)
    last_norm = float(ip.user_ns["model"][0].weight.grad.norm())
    assert training.steps[-1].grad_norms["model.0.weight"] == pytest.approx(last_norm, rel=1e-3)
    assert not [d for d in report.diagnostics if d.severity != "note"]


IN_A_FUNCTION = """
def train():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    losses = []
    for step in range(30):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses
trained, losses = train()
"""


def test_a_model_held_only_by_a_functions_locals_is_named_boxed_and_followed(ip: Any) -> None:
    report, cell = report_of(ip, SETUP + IN_A_FUNCTION)
    assert cell.error is None
    training = report.training
    assert training.parameters == ("model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias")
    assert [s.step for s in training.steps] == list(range(1, 31))
    # the loop runs unwatched after its recorded steps: their losses are read from train()'s `loss`
    assert [s.loss for s in training.steps] == pytest.approx(ip.user_ns["losses"], rel=1e-3)
    last_norm = float(ip.user_ns["trained"][0].weight.grad.norm())
    assert training.steps[-1].grad_norms["model.0.weight"] == pytest.approx(last_norm, rel=1e-3)
    graph = report.graphs[0]
    assert [(m.name, m.cls) for m in graph.modules] == [("model", "Sequential"), ("model.0", "Linear"),
                                                        ("model.1", "ReLU"), ("model.2", "Linear")]
    assert "model.0.weight" in render_text(report)
    assert "train" in ip.user_ns and "model" not in ip.user_ns  # nothing of ours left in the namespace


def test_a_global_wins_over_a_local_of_the_same_name(ip: Any) -> None:
    body = IN_A_FUNCTION.replace("model = nn", "model = net = nn")
    report, cell = report_of(ip, SETUP + "model = nn.Linear(2, 2)\n" + body)
    assert cell.error is None  # `model` names the global Linear, so train()'s model goes by its other name
    assert report.training.parameters == ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias")
    assert {m.name for m in report.graphs[0].modules} == {"net", "net.0", "net.1", "net.2"}


FREED_IN_A_FUNCTION = """
import weakref
def train():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    alive = []
    for step in range(4):
        opt.zero_grad()
        out = model(torch.randn(16, 4))
        loss = out.pow(2).mean()
        loss.backward()
        opt.step()
        gone = weakref.ref(out)
        del out, loss
        alive.append(gone() is not None)
    return alive
alive = train()
"""


def test_reading_a_functions_locals_keeps_none_of_its_tensors_alive(ip: Any) -> None:
    plain = run(ip, SETUP + FREED_IN_A_FUNCTION)
    assert plain.error is None and ip.user_ns["alive"] == [False] * 4
    report, cell = report_of(ip, SETUP + FREED_IN_A_FUNCTION)
    assert cell.error is None and report.training is not None and report.training.parameters
    assert ip.user_ns["alive"] == [False] * 4  # a deleted local dies at once, as plain (no snapshot dict holds it)


def test_training_json_lists_steps_with_loss_and_norms_by_name(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + HEALTHY)
    data = json.loads(report.to_json())["training"]
    assert len(data["steps"]) == 30
    assert set(data["steps"][0]) == {"step", "loss", "grad_norms", "update_ratios"}
    assert set(data["steps"][0]["grad_norms"]) == {"model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"}
    assert set(data["steps"][0]["update_ratios"]) == set(data["steps"][0]["grad_norms"])
    assert data["steps"][-1]["update_ratios"] == {} and data["no_ratio"] == 0  # no backward saw the last update
    assert data["diagnostics"] == []


def test_a_cell_with_one_backward_has_no_training_section(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + "w = torch.randn(3, requires_grad=True)\n(w * 2).sum().backward()")
    assert report.training is None and report.to_dict()["training"] is None
    assert "Training:" not in render_text(report)


def test_parameters_past_the_cap_are_counted_not_followed(ip: Any) -> None:
    body = ("model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(110)])\n"
            "for i in range(2):\n    model(torch.randn(1, 2)).sum().backward()")
    report, _ = report_of(ip, SETUP + body)
    assert len(report.training.parameters) == MAX_TRACKED
    assert report.training.untracked == 220 - MAX_TRACKED
    assert f"{220 - MAX_TRACKED} more parameters not followed" in render_text(report)


def test_a_long_loop_keeps_its_whole_span_at_a_bounded_number_of_steps(ip: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_training, "MAX_STEPS", 8)
    report, _ = report_of(ip, SETUP + HEALTHY)
    steps = [s.step for s in report.training.steps]
    assert len(steps) <= 8 and steps[0] == 1 and steps[-1] >= 26  # 30 steps, every 4th kept
    assert report.training.stride == 4 and steps == list(range(1, 31, 4))
    assert "Training: 30 steps" in render_text(report) and "every 4th step kept" in render_text(report)


# -- the update/weight ratio ----------------------------------------------------------------------------
SGD_BY_HAND = """
model = nn.Linear(3, 2).double()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 3, dtype=torch.float64)
expected = []
for step in range(5):
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    expected.append({name: (0.1 * p.grad.norm() / p.norm()).item() for name, p in model.named_parameters()})
    opt.step()
"""


def _ratios(report: Any) -> list[dict[str, float]]:
    return [s.update_ratios for s in report.training.steps]


def test_sgd_update_ratio_is_lr_times_grad_norm_over_weight_norm(ip: Any) -> None:
    report, cell = report_of(ip, SETUP + SGD_BY_HAND)
    assert cell.error is None
    expected = [{f"model.{k}": v for k, v in row.items()} for row in ip.user_ns["expected"]]
    ratios = _ratios(report)
    assert ratios[-1] == {}  # no later backward saw the last step's update
    for got, want in zip(ratios[:-1], expected[:-1], strict=True):
        assert got == pytest.approx(want, rel=1e-3)  # the report keeps 4 digits
    assert report.training.no_ratio == 0


def test_manual_updates_without_an_optimizer_get_ratios(ip: Any) -> None:
    for update in ("w -= 0.01 * w.grad", "w.data -= 0.01 * w.grad"):  # .data moves no version counter
        body = ("w = torch.ones(4, requires_grad=True)\nx = torch.arange(4.0)\nfor i in range(3):\n"
                "    loss = (w * x).sum()\n    loss.backward()\n    with torch.no_grad():\n"
                f"        {update}\n        w.grad = None\n")
        report, cell = report_of(ip, SETUP + body)
        assert cell.error is None
        assert _ratios(report)[0]["w"] == pytest.approx(0.01 * float(torch.arange(4.0).norm()) / 2, rel=1e-3)


def test_repeated_backward_without_updates_has_no_ratios(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\nfor i in range(4):\n    loss = (w * 2).sum()\n    loss.backward()"
    report, _ = report_of(ip, SETUP + body)
    assert _ratios(report) == [{}] * 4
    assert "update/weight" not in render_text(report)


def test_a_trainable_parameter_the_optimizer_skips_has_ratio_zero_and_a_frozen_one_none(ip: Any) -> None:
    body = ("body = nn.Linear(4, 4)\nhead = nn.Linear(4, 1)\nfrozen = nn.Linear(4, 4).requires_grad_(False)\n"
            "opt = torch.optim.SGD(head.parameters(), lr=0.1)\nx = torch.randn(8, 4)\nfor i in range(3):\n"
            "    opt.zero_grad()\n    head(body(frozen(x))).pow(2).mean().backward()\n    opt.step()\n")
    report, _ = report_of(ip, SETUP + body)
    first = _ratios(report)[0]
    assert first["body.weight"] == 0.0 and first["head.weight"] > 0
    assert "frozen.weight" not in report.training.parameters  # not trainable: not followed at all


def test_parameters_over_the_copy_caps_get_no_ratio_and_are_counted(ip: Any) -> None:
    body = ("big = nn.Linear(512, 512)\n"  # 1 MiB of weight: over the 256 KiB cap
            "layers = nn.Sequential(*[nn.Linear(200, 200) for _ in range(30)])\n"  # 4.8 MB in all: over 4 MiB
            "opt = torch.optim.SGD([*big.parameters(), *layers.parameters()], lr=0.1)\nx = torch.randn(2, 512)\n"
            "for i in range(2):\n    opt.zero_grad()\n    layers(big(x)[:, :200]).sum().backward()\n    opt.step()\n")
    report, _ = report_of(ip, SETUP + body)
    first = _ratios(report)[0]
    assert "big.weight" not in first and "big.bias" in first
    sizes = {name: p.numel() * 4 for name, p in [*ip.user_ns["big"].named_parameters(prefix="big"),
                                                  *ip.user_ns["layers"].named_parameters(prefix="layers")]}
    assert sum(sizes[name] for name in first) <= capture_updates.MAX_TOTAL_BYTES
    uncopied = len(report.training.parameters) - len(first)
    assert report.training.no_ratio == uncopied and uncopied > 1
    assert f"{uncopied} parameters too big to copy" in render_text(report)


def test_a_long_loop_keeps_one_step_ratios_on_the_steps_it_keeps(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_training, "MAX_STEPS", 8)
    body = SGD_BY_HAND.replace("range(5)", "range(30)")
    report, _ = report_of(ip, SETUP + body)
    steps = report.training.steps
    assert [s.step for s in steps] == list(range(1, 31, 4))
    for s in steps:  # each covers the one update after its own backward, not the 4 since the previous kept step
        want = {f"model.{k}": v for k, v in ip.user_ns["expected"][s.step - 1].items()}
        assert s.update_ratios == pytest.approx(want, rel=1e-3)


def test_past_the_ratio_budget_every_other_kept_step_gets_a_ratio(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_training, "MAX_RATIOS", 4)
    report, _ = report_of(ip, SETUP + HEALTHY)
    rated = [s.step for s in report.training.steps if s.update_ratios]
    assert len(report.training.steps) == 30 and 2 <= len(rated) <= 4
    assert rated[0] == 1 and rated[-1] >= 17 and len({b - a for a, b in zip(rated, rated[1:], strict=False)}) == 1


def test_the_weight_copies_are_freed_with_the_cell(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    original = capture_updates.WeightCopies.__init__

    def remember(self: Any) -> None:
        original(self)
        made.append(self)
    monkeypatch.setattr(capture_updates.WeightCopies, "__init__", remember)
    report_of(ip, SETUP + HEALTHY)
    assert made and all(c.nbytes == 0 and c.taken_at is None for c in made)


# -- diagnostics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(PRODUCERS))
def test_training_diagnostic_fires_on_a_cell_that_produces_it(ip: Any, kind: str) -> None:
    body, severity = PRODUCERS[kind]
    report, cell = report_of(ip, SETUP + body)
    assert cell.error is None
    found = [d for d in report.diagnostics if d.kind == kind]
    assert found and found[0].severity == severity and "Fix:" in found[0].message
    assert found[0].code == "loss.backward()"
    assert kind in [d.kind for d in report.training.diagnostics]


def test_exploding_names_the_first_step_and_parameter_that_went_non_finite(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + EXPLODING_TO_INF)
    found = next(d for d in report.diagnostics if d.kind == "exploding-gradients")
    first = next(s.step for s in report.training.steps if any(v != v or v in (float("inf"),)
                                                                for v in s.grad_norms.values()))
    assert found.names == ("w",) and f"at step {first} of 40" in found.message


def test_never_gets_gradient_names_the_unused_layer_only(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + PRODUCERS["never-gets-gradient"][0])
    found = next(d for d in report.diagnostics if d.kind == "never-gets-gradient")
    assert found.names == ("model.aux.weight", "model.aux.bias")


def _trace(losses: list[float | None], norms: list[float]) -> Trace:
    steps = tuple(TrainingStep(i, loss, (n,)) for i, (loss, n) in enumerate(zip(losses, norms, strict=True), 1))
    return Trace(source="loss.backward()", first_line=1,
                 training=TrainingTrace(("w",), (True,), (True,), steps, line=1, optimizer=True))


def test_repeated_backward_without_an_optimizer_is_not_called_a_constant_loss(ip: Any) -> None:
    body = "w = torch.ones(3, requires_grad=True)\nfor i in range(4):\n    loss = (w * 2).sum()\n    loss.backward()"
    report, _ = report_of(ip, SETUP + body)
    assert report.training is not None and "constant-loss" not in kinds(report)


def test_a_loss_that_moves_a_little_is_not_constant() -> None:
    assert check_constant_loss(_trace([1.0, 1.0, 1.0], [1, 1, 1]), Names())
    assert not check_constant_loss(_trace([1.0, 0.999, 0.998], [1, 1, 1]), Names())


def test_norms_that_grow_then_fall_are_not_exploding() -> None:
    assert check_exploding_gradients(_trace([1.0] * 4, [1.0, 10.0, 1e4, 1e5]), Names())
    assert not check_exploding_gradients(_trace([1.0] * 4, [1.0, 1e4, 1e5, 1.0]), Names())


def _layers(first: float, last: float) -> Trace:
    names = ("m.0.weight", "m.0.bias", "m.2.weight", "m.2.bias")
    steps = tuple(TrainingStep(i, 1.0 / i, (first, first, last, last)) for i in range(1, 4))
    return Trace(source="loss.backward()", first_line=1,
                 training=TrainingTrace(names, (True,) * 4, (True,) * 4, steps, line=1))


def test_vanishing_compares_the_first_layer_with_the_last() -> None:
    found = check_vanishing_gradients(_layers(1e-8, 1.0), Names())
    assert [d.names for d in found] == [("m.0", "m.2")]
    assert not check_vanishing_gradients(_layers(1e-2, 1.0), Names())  # smaller, not vanished
    assert not check_vanishing_gradients(_layers(1.0, 1e-8), Names())  # the last layer small: another story


@pytest.mark.parametrize("name", list(CLEAN))
def test_healthy_training_stays_silent(ip: Any, name: str) -> None:
    report, cell = report_of(ip, SETUP + CLEAN[name])
    assert cell.error is None and report.training is not None
    assert [d for d in report.diagnostics if d.severity != "note"] == [], kinds(report)


# -- views --------------------------------------------------------------------------------------------
def test_text_and_html_show_a_compact_table_per_parameter(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + HEALTHY)
    text = render_text(report)
    assert "Training: 30 steps (backward at line" in text
    assert "model.0.weight" in text.split("Training:")[1]
    html = render_html(report)
    assert '<table class="training">' in html and html.count("<tr>") > 10
    assert payload(report)["training"]["steps"][29]["step"] == 30
    header = next(line for line in text.splitlines() if line.strip().startswith("parameter"))
    assert header.split()[-1] == "update/weight" and "<th>update/weight</th>" in html
    assert "update/weight: ||Δw|| / ||w|| of the update after backward 25" in text  # every 8th, unwatched
    assert payload(report)["training"]["steps"][0]["update_ratios"]["model.0.weight"] > 0


# -- invisibility -------------------------------------------------------------------------------------
COUNTING_MODE = """
from torch.utils._python_dispatch import TorchDispatchMode
class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))
counter = Count()
"""


def _run_both(ip: Any, setup: str, body: str, probe: str) -> list[Any]:
    seen = []
    for prefix in ("", "%%autograd -q\n"):
        ip.reset(new_session=False)
        assert run(ip, SETUP + setup).error is None
        assert run(ip, prefix + body).error is None
        seen.append(ip.ev(probe))
    return seen


def test_a_user_dispatch_mode_counts_the_same_ops_plain_and_recorded(ip: Any) -> None:
    body = "with counter:\n" + "".join("    " + line + "\n" for line in HEALTHY.strip().splitlines())
    plain, recorded = _run_both(ip, COUNTING_MODE, body, "(counter.n, losses[-1])")
    assert plain == recorded and plain[0] > 0


FUNCTION_MODE = """
from torch.overrides import TorchFunctionMode
class Names(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(getattr(func, "__name__", "?"))
        return func(*args, **(kwargs or {}))
counter = Names()
"""


def test_a_user_function_mode_opened_earlier_sees_the_same_calls_in_a_loop(ip: Any) -> None:
    try:
        plain, recorded = _run_both(ip, FUNCTION_MODE + "counter.__enter__()", HEALTHY, "list(counter.seen)")
    finally:
        while torch._C._len_torch_function_stack() > 0:
            torch._C._pop_torch_function_stack()
    assert plain == recorded and "backward" in plain


def test_no_parameter_or_gradient_is_kept_alive_after_the_cell(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + HEALTHY)
    assert report.training is not None
    run(ip, "import weakref\nrefs = [weakref.ref(p) for p in model.parameters()]"
            " + [weakref.ref(p.grad) for p in model.parameters()]\ndel model, opt, loss, p")
    gc.collect()
    assert [r() for r in ip.user_ns["refs"]] == [None] * 8


def test_nothing_is_read_while_a_profiler_records(ip: Any) -> None:
    body = ("with torch.profiler.profile() as prof:\n"
            + "".join("    " + line + "\n" for line in HEALTHY.strip().splitlines()))
    report, cell = report_of(ip, SETUP + body)
    assert cell.error is None
    assert report.training.unread == 30 and report.training.steps == ()


# -- the plot, in a real browser (the widget's ESM in chromium: see test_widget.open_view) -------------------
@pytest.mark.browser
def test_browser_training_panel_plots_one_line_per_parameter(ip: Any, browser_page: Any, tmp_path: Path) -> None:
    report, _ = report_of(ip, SETUP + HEALTHY)
    page = browser_page
    open_view(page, AutogradView(report), tmp_path)
    page.click('button[role="tab"]:has-text("Training")')
    assert page.evaluate("window.agmData.tab") == "training"
    names = page.eval_on_selector_all("svg.agm-plot path.agm-series", "els => els.map(e => e.dataset.name)")
    assert names == [*report.training.parameters, "loss"]
    drawn = page.eval_on_selector_all("svg.agm-plot path.agm-series", "els => els.map(e => e.getAttribute('d'))")
    assert all(d.count("L") == 29 for d in drawn)  # 30 steps, each a point of every line
    box = page.query_selector("svg.agm-plot").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 20, box["y"] + box["height"] / 2)
    assert "step 30: model.0.weight" in page.inner_text(".agm-plot-readout")
    page.click('button.agm-toggle[data-view="ratios"]')
    assert page.get_attribute('button.agm-toggle[data-view="ratios"]', "aria-pressed") == "true"
    ratios = page.eval_on_selector_all("svg.agm-plot path.agm-series", "els => els.map(e => e.dataset.name)")
    assert ratios == [*report.training.parameters, "loss"]  # one ratio line per parameter, then the loss plot
    drawn = page.eval_on_selector_all("svg.agm-plot path.agm-series", "els => els.map(e => e.getAttribute('d'))")
    rated = [s.step for s in report.training.steps if s.update_ratios]
    # the first 8 steps, then every 8th of the loop run unwatched (the last update is never seen): a point each
    assert rated == [*range(1, 10), 17, 25]
    assert all(d.count("L") == len(rated) - 1 for d in drawn[:-1])
    assert page.query_selector("svg.agm-plot line.agm-plot-reference") is not None
    assert "rule of thumb" in page.inner_text(".agm-training")
    for theme in ("light", "dark"):
        _screenshot(page, theme, f"{theme}-ratios.png")
    page.click('button.agm-toggle[data-view="grads"]')
    assert page.query_selector("svg.agm-plot line.agm-plot-reference") is None
    assert page.agm_errors == []


@pytest.mark.browser
def test_browser_many_parameters_are_plotted_one_line_per_layer(ip: Any, browser_page: Any, tmp_path: Path) -> None:
    report, _ = report_of(ip, SETUP + PRODUCERS["vanishing-gradients"][0])
    page = browser_page
    open_view(page, AutogradView(report, tab="training"), tmp_path)
    names = page.eval_on_selector_all("svg.agm-plot path.agm-series", "els => els.map(e => e.dataset.name)")
    assert names == [f"model.{i}" for i in range(0, 25, 2)] + ["loss"]  # 13 Linear layers, weight and bias joined
    assert page.agm_errors == []


@pytest.mark.parametrize("log", ["    losses.append(loss.item())\n", "    print(float(loss.detach()))\n", ""])
def test_a_training_loop_draws_one_graph_named_by_its_loss(ip: Any, log: str) -> None:
    """The loop's last loss was backwarded (past the detail cap): no extra "no backward() from it" graph,
    and no graph for logging it; the root is named from ``loss.backward()`` though ``F.mse_loss`` bound it."""
    run(ip, SETUP)
    body = HEALTHY.replace("    losses.append(loss.item())\n", log)
    report, cell = report_of(ip, body)
    cell.result.raise_error()
    assert [(g.root, g.backward) for g in report.graphs] == [("loss", True)]
    assert report.graphs[0].calls == 30


def test_a_logged_value_never_backwarded_still_gets_its_graph(ip: Any) -> None:
    run(ip, SETUP)
    report, _ = report_of(ip, "w = torch.ones(3, requires_grad=True)\nv = (w * 2).sum()\nprint(v.item())\n")
    assert [g.backward for g in report.graphs] == [False] and report.graphs[0].nodes


def test_torch_autograd_backward_names_its_root_from_nothing_but_its_binding(ip: Any) -> None:
    run(ip, SETUP)
    body = ("w = torch.ones(2, requires_grad=True)\n"
            "for i in range(3):\n    torch.autograd.backward(F.mse_loss(w, w * 0))\n")
    report, _ = report_of(ip, body)
    assert report.graphs and report.graphs[0].root != "torch.autograd"
