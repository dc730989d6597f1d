"""non-finite: where the first nan/inf came from and why, through a real shell; silence for infinities on purpose.

Each road fails without the feature: the diagnostic must name the line, the variable and the reason
read from the inputs, mark the graph, answer ``report.why`` and say it in the replay.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import report_of
from test_diagnostics import diagnose, line_of, one

from autograd_magic.views.graph import to_dot

SETUP = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\ntorch.manual_seed(0)\n"

# road -> (body, the line's text, the variable, words the reason must hold, words the fix must hold)
FORWARD_ROADS = {
    "log of 0": ("x = torch.tensor([0., 1., 4.], requires_grad=True)\ny = torch.log(x)\nloss = (y * 2).sum()\n"
                 "loss.backward()\n", "y = torch.log", "y", "`x` held 1 zero", "clamp(min="),
    "log of a negative": ("x = torch.tensor([-1., 1.], requires_grad=True)\ny = x.log()\ny.sum().backward()\n",
                          "y = x.log", "y", "1 negative", "clamp(min="),
    "log(softmax) underflow": ("logits = torch.tensor([[0., -200.]], requires_grad=True)\n"
                               "p = torch.log(torch.softmax(logits, -1))\np.sum().backward()\n", "p = torch.log", "p",
                               "underflows to 0", "torch.log_softmax"),
    "sqrt of a negative": ("x = torch.tensor([-4., 4.], requires_grad=True)\nr = torch.sqrt(x)\nr.sum().backward()\n",
                           "r = torch.sqrt", "r", "square root of a negative", "clamp(min=0)"),
    "fractional pow of a negative": ("x = torch.tensor([-2., 3.], requires_grad=True)\nr = x ** 0.5\n"
                                     "r.sum().backward()\n", "r = x", "r", "fractional power (0.5)", "clamp(min=0)"),
    "0/0": ("a = torch.zeros(3, requires_grad=True)\nb = torch.zeros(3)\nc = a / b\nc.sum().backward()\n",
            "c = a / b", "c", "`b` held 3 zeros", "b.clamp(min=1e-12)"),
    "x/0 with a number": ("a = torch.ones(2, requires_grad=True)\nc = torch.div(a, 0)\nc.sum().backward()\n",
                          "c = torch.div", "c", "x/0 is ±inf", "away from 0"),
    "exp overflow": ("x = torch.tensor([1., 100.], requires_grad=True)\ny = torch.exp(x)\ny.sum().backward()\n",
                     "y = torch.exp", "y", "`x` reached 100", "torch.logsumexp"),
    "acos outside [-1, 1]": ("x = torch.tensor([0.5, 1.5], requires_grad=True)\nt = torch.acos(x)\n"
                             "t.sum().backward()\n", "t = torch.acos", "t", "outside it", "clamp(-1 + 1e-6"),
    "inf - inf": ("big = torch.tensor([1e30, 1.], requires_grad=True)\nsq = big * big\nd = sq - sq\n"
                  "d.sum().backward()\n", "sq = big", "sq", "largest float32", "float64"),
    "std of one value": ("x = torch.tensor([3.], requires_grad=True)\ns = x.std()\ns.backward()\n", "s = x.std",
                         "s", "divides by n - 1 = 0", "correction=0"),
    "log(sigmoid) underflow": ("x = torch.tensor([-200., 1.], requires_grad=True)\nl = torch.log(torch.sigmoid(x))\n"
                               "l.sum().backward()\n", "l = torch.log", "l", "underflows to 0", "F.logsigmoid"),
    "a fully masked softmax row that reaches the loss": (
        "s = torch.randn(2, 3, requires_grad=True)\nm = torch.tensor([[True] * 3, [False] * 3])\n"
        "p = torch.softmax(s.masked_fill(m, float('-inf')), -1)\np.sum().backward()\n", "p = torch.softmax", "p",
        "whole row of scores was -inf", "torch.finfo"),
}


@pytest.mark.parametrize("road", list(FORWARD_ROADS))
def test_forward_nan_names_line_variable_and_reason(ip: Any, road: str) -> None:
    body, where, name, why, fix = FORWARD_ROADS[road]
    report = diagnose(ip, SETUP + body)
    d = one(report, "non-finite")
    assert (d.line, d.names, d.severity) == (line_of(SETUP + body, where), (name,), "error")
    assert why in d.message and fix in d.message.split("Fix:")[1], d.message


WRITTEN_ROADS = {
    "inf - inf": ("t = torch.full((2,), float('inf'))\nd = t - t\n", "d = t - t", "d", "inf - inf is nan"),
    "0 * inf": ("t = torch.full((2,), float('inf'))\nz = torch.zeros(2) * t\n", "z = torch", "z", "0 · inf is nan"),
}


@pytest.mark.parametrize("road", list(WRITTEN_ROADS))
def test_a_nan_made_from_infinities_written_on_purpose_is_found(ip: Any, road: str) -> None:
    body, where, name, why = WRITTEN_ROADS[road]
    d = one(diagnose(ip, SETUP + body), "non-finite", "warning")
    assert (d.line, d.names) == (line_of(SETUP + body, where), (name,)) and why in d.message, d.message
    assert "from finite inputs" not in d.message and d.message.count("`t` held inf") == 1


def test_a_nan_result_no_backward_reads_is_a_warning(ip: Any) -> None:
    body = "x = torch.tensor([0., 2.])\ny = torch.log(x) * 3\n"
    d = one(diagnose(ip, SETUP + body), "non-finite", "warning")
    assert d.line == line_of(SETUP + body, "y = torch.log") and "`x` held 1 zero" in d.message


BACKWARD_ROADS = {
    "sqrt at 0": ("x = torch.tensor([0., 4.], requires_grad=True)\nz = torch.sqrt(x)\nz.sum().backward()\n",
                  "z = torch.sqrt", "SqrtBackward0", "infinite at x = 0", "forward values were fine"),
    "division's derivative at 0": ("a = torch.tensor([0., 1.], requires_grad=True)\n"
                                   "b = torch.tensor([0., 2.], requires_grad=True)\nq = a / (b ** 2 + 1)\n"
                                   "n = torch.sqrt(b)\n(q + n).sum().backward()\n", "n = torch.sqrt",
                                   "SqrtBackward0", "infinite", "forward values were fine"),
    "where's untaken branch": ("x = torch.tensor([0., 1., 4.], requires_grad=True)\n"
                               "y = torch.where(x > 0, torch.log(x), torch.zeros_like(x))\ny.sum().backward()\n",
                               "y = torch.where", "LogBackward0", "0 · inf = nan", "torch.where(ok, f(torch.where"),
}


@pytest.mark.parametrize("road", list(BACKWARD_ROADS))
def test_backward_nan_names_the_node_whose_derivative_made_it(ip: Any, road: str) -> None:
    body, where, label, why, words = BACKWARD_ROADS[road]
    report = diagnose(ip, SETUP + body)
    d = one(report, "non-finite", "error")
    assert d.line == line_of(SETUP + body, where) and label in d.message
    assert why in d.message and words in d.message, d.message
    marked = [n for g in report.graphs for n in g.nodes if n.nonfinite.endswith("(backward)")]
    assert [n.label for n in marked] == [label]
    steps = [s for r in report.backward_steps for s in r.steps if "⚠ Here the gradient became" in s.words]
    assert [s.label for s in steps] == [label]


def test_graph_marks_the_origin_red_and_tints_what_carries_it(ip: Any) -> None:
    body = "x = torch.tensor([0., 1.], requires_grad=True)\ny = torch.log(x)\nz = y * 2\nz.sum().backward()\n"
    report = diagnose(ip, SETUP + body)
    marks = {n.label: n.nonfinite for n in report.graphs[0].nodes}
    assert marks["LogBackward0"] == "inf" and marks["MulBackward0"] == "carried" and marks["AccumulateGrad"] == ""
    dot = to_dot(report.graphs[0])
    origin = next(line for line in dot.splitlines() if "LogBackward0" in line)
    assert "⚠ inf" in origin and 'color="red3"' in origin and "agm-nonfinite" in origin
    assert "nonfinite" in report.to_json()


def test_why_walks_a_nan_gradient_back_to_where_it_started(ip: Any) -> None:
    body = "x = torch.tensor([0., 1.], requires_grad=True)\ny = torch.log(x)\ny.sum().backward()\n"
    report = diagnose(ip, SETUP + body)
    answer = report.why("x")
    assert "not finite because the nan/inf started in the forward pass" in answer
    assert f"line {line_of(SETUP + body, 'y = torch.log')}" in answer and "torch.log(x)" in answer


def test_training_step_that_went_nan_is_linked_to_the_op(ip: Any) -> None:
    body = ("w = torch.tensor([1., 2.], requires_grad=True)\nopt = torch.optim.SGD([w], lr=0.1)\n"
            "for i in range(4):\n    opt.zero_grad()\n    loss = torch.log(w - 1).sum()\n    loss.backward()\n"
            "    opt.step()\n")
    d = one(diagnose(ip, SETUP + body), "non-finite", "error")
    assert d.line == line_of(SETUP + body, "loss = torch.log")
    assert "the loss stopped being finite at step 1" in d.message


def test_training_step_past_the_recording_cap_says_how_to_record_it(ip: Any) -> None:
    body = ("w = torch.randn(3, requires_grad=True)\nopt = torch.optim.SGD([w], lr=0.1)\nfor i in range(12):\n"
            "    opt.zero_grad()\n    loss = (w ** 2).sum() / (0 if i == 10 else 1)\n    loss.backward()\n"
            "    opt.step()\n")
    d = one(diagnose(ip, SETUP + body), "non-finite", "note")
    assert "step 11, after recording stopped" in d.message and "max_repeats" in d.message


def test_grad_scaler_skipping_steps_is_a_note_and_not_exploding(ip: Any) -> None:
    body = ("model = nn.Linear(4, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.01)\n"
            "scaler = torch.amp.GradScaler('cpu', init_scale=2.**127)\nx, y = torch.randn(8, 4), torch.randn(8, 1)\n"
            "for step in range(4):\n    opt.zero_grad()\n    loss = F.mse_loss(model(x), y)\n"
            "    scaler.scale(loss).backward()\n    scaler.step(opt)\n    scaler.update()\n")
    report = diagnose(ip, SETUP + body)
    assert [(d.kind, d.severity) for d in report.diagnostics] == [("non-finite", "note")]
    assert "GradScaler skipped step 1 " in report.diagnostics[0].message
    assert "settled on 8.50706e+37" in report.diagnostics[0].message  # 2 ** 126: halved once


# -- silent on purpose ---------------------------------------------------------------------------
CLEAN_INFINITIES = {
    "causal attention mask with -inf": """
q = torch.randn(2, 4, 8, requires_grad=True)
k = torch.randn(2, 4, 8)
s = q @ k.transpose(-1, -2) / 8 ** 0.5
causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
a = torch.softmax(s.masked_fill(causal, float('-inf')), -1)
(a @ k).sum().backward()
""",
    "padding mask with finfo.min": """
x = torch.randn(3, 5, requires_grad=True)
keep = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
s = x + (~keep) * torch.finfo(x.dtype).min
s = s + (~keep) * torch.finfo(x.dtype).min
p = torch.softmax(s, -1)
p.pow(2).sum().backward()
""",
    "log-space sum with logsumexp over -inf padding": """
x = torch.randn(3, 5, requires_grad=True)
keep = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
lse = torch.logsumexp(x.masked_fill(~keep, float('-inf')), -1)
lse.sum().backward()
""",
    "fully masked rows cleaned after softmax (inference)": """
x = torch.randn(4, 6)
m = torch.zeros(4, 6, dtype=torch.bool)
m[1] = True
p = torch.softmax(x.masked_fill(m, float('-inf')), -1)
p = torch.nan_to_num(p, nan=0.0)
out = p.masked_fill(m, 0.0)
""",
    "running minimum from inf": """
best = torch.tensor(float('inf'))
w = torch.randn(3, requires_grad=True)
for step in range(3):
    loss = (w ** 2).sum()
    best = torch.minimum(best, loss.detach())
    loss.backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
    w.grad = None
""",
    "-inf padding and torch.full": """
pad = torch.full((2, 3), float('-inf'))
scores = torch.cat([torch.randn(2, 4), pad], dim=1)
probs = scores.softmax(-1)
lo = torch.tensor(float('inf'))
hi = torch.tensor([-float('inf'), 1.0]).max()
""",
    "where on a safe input": """
x = torch.tensor([0., 1., 4.], requires_grad=True)
ok = x > 0
y = torch.where(ok, torch.log(torch.where(ok, x, torch.ones_like(x))), torch.zeros_like(x))
y.sum().backward()
""",
    "nn.MultiheadAttention with a key padding mask": """
mha = nn.MultiheadAttention(8, 2, batch_first=True)
x = torch.randn(2, 5, 8)
pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
out, w = mha(x, x, x, key_padding_mask=pad)
out.sum().backward()
""",
    "cross entropy with ignore_index": """
logits = torch.randn(4, 3, requires_grad=True)
target = torch.tensor([0, -100, 2, 1])
loss = F.cross_entropy(logits, target, ignore_index=-100)
loss.backward()
""",
    "a log-space mask from a 0/1 mask": """
logits = torch.randn(3, 4, requires_grad=True)
keep = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
logmask = keep.float().log()
p = torch.softmax(logits + logmask, -1)
p[:, 0].sum().backward()
""",
    "GradScaler at a sane scale": """
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
scaler = torch.amp.GradScaler('cpu')
x, y = torch.randn(8, 4), torch.randn(8, 1)
for step in range(3):
    opt.zero_grad()
    scaler.scale(F.mse_loss(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
""",
}


@pytest.mark.parametrize("cell", list(CLEAN_INFINITIES))
def test_infinities_on_purpose_stay_silent(ip: Any, cell: str) -> None:
    report, result = report_of(ip, SETUP + CLEAN_INFINITIES[cell])
    assert result.error is None
    assert [(d.kind, d.severity, d.message) for d in report.diagnostics if d.severity != "note"] == []
    assert not [d for d in report.diagnostics if d.kind == "non-finite"]
    assert not [n for g in report.graphs for n in g.nodes if n.nonfinite]


def test_a_nan_the_model_computes_is_still_found_under_a_grad_scaler(ip: Any) -> None:
    body = ("w = torch.tensor([1., 2.], requires_grad=True)\nopt = torch.optim.SGD([w], lr=0.1)\n"
            "scaler = torch.amp.GradScaler('cpu')\nfor step in range(3):\n    opt.zero_grad()\n"
            "    loss = torch.log(w - 1).sum()\n    scaler.scale(loss).backward()\n    scaler.step(opt)\n"
            "    scaler.update()\n")
    d = one(diagnose(ip, SETUP + body), "non-finite", "error")
    assert d.line == line_of(SETUP + body, "loss = torch.log") and "log of 0" in d.message


# -- the analysis on hand-built traces -------------------------------------------------------------
def _op(seq: int, func: str, ins: tuple[int, ...], out: int, nf: Any = None) -> Any:
    from autograd_magic.trace.events import OpEvent, Site, TensorInfo
    return OpEvent(seq, func, Site(seq + 1, f"line {seq}"), tuple(TensorInfo(t, dtype="float32") for t in ins),
                   (TensorInfo(out, dtype="float32"),), nonfinite=nf)


def test_a_written_infinity_is_no_origin_and_a_nan_dropped_by_a_later_op_reaches_nothing() -> None:
    from autograd_magic.analysis.nonfinite import spread_of
    from autograd_magic.trace.events import NonFinite, Stats, TensorInfo, Trace
    finite, neg_inf, nan = Stats(4), Stats(4, neginf=4), Stats(4, nan=4)
    ops = (_op(1, "masked_fill", (1,), 2, NonFinite(Stats(4, neginf=2), (finite,), written="value")),
           _op(2, "softmax", (2,), 3, NonFinite(Stats(4, nan=4), (neg_inf,))),  # a fully masked row: nan
           _op(3, "nan_to_num", (3,), 4))  # cleaned: finite
    spread = spread_of(Trace(ops=ops, final={"p": TensorInfo(4, dtype="float32")}))
    assert not spread.origins[1].computed and spread.origins[2].computed
    assert spread.first_reaching() is None  # nothing non-finite is left anywhere
    kept = spread_of(Trace(ops=ops[:2], final={"p": TensorInfo(3, dtype="float32")}))
    found = kept.first_reaching()
    assert found is not None and found.op.seq == 2  # left in `p`: reported
    assert nan.nan == 4
