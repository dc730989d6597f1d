"""Values on the graph and the backward replay (issue 12, items 1 and 2), through the real shell."""

from __future__ import annotations

import gc
import json
import weakref
from typing import Any

from conftest import report_of, run

from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text

SEED = """x = torch.tensor([5.], requires_grad=True)
y = torch.tensor([7.], requires_grad=True)
var1 = 2*x
var2 = x+y
z = var2 - var1
z.backward()"""


def nodes_by_name(report: Any) -> dict[str, Any]:
    return {n.name: n for g in report.graphs for n in g.nodes if n.name}


def steps(report: Any, index: int = 0) -> list[Any]:
    return list(report.backward_steps[index].steps)


# -- 1. values on the graph ---------------------------------------------------------------------------
def test_graph_nodes_carry_the_values_the_cell_computed(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    values = {name: node.value.values for name, node in nodes_by_name(report).items()}
    assert values == {"z": [2.0], "var2": [12.0], "var1": [10.0], "x": [5.0], "y": [7.0]}


def test_a_value_is_the_one_read_when_the_op_ran_not_after_a_later_write(ip: Any) -> None:
    body = "x = torch.tensor([1., 2.], requires_grad=True)\nh = x * 3\nloss = h.sum()\nwith torch.no_grad():\n" \
           "    x.mul_(10)\nloss.backward()"
    report, _ = report_of(ip, body)
    named = nodes_by_name(report)
    assert named["h"].value.values == [3.0, 6.0]
    assert named["loss"].value.values == 9.0
    assert named["x"].value.values == [10.0, 20.0]  # the leaf was written: its value now, as backward saw it


def test_a_big_tensor_value_is_a_shape_norm_and_range(ip: Any) -> None:
    report, _ = report_of(ip, "w = torch.full((30, 40), 2., requires_grad=True)\nh = w - 3\nh.sum().backward()")
    value = nodes_by_name(report)["h"].value
    assert value.values is None and value.shape == (30, 40)
    assert value.low == value.high == -1.0 and abs(value.norm - (1200 ** 0.5)) < 1e-3


def test_the_text_view_shows_node_values(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    text = render_text(report)
    assert "var2 AddBackward0 (1) (line 4: x+y) value = 12  grad = 1" in text
    assert "x AccumulateGrad (1) value = 5  grad = -1" in text


# -- 2. the replay ------------------------------------------------------------------------------------
def test_seed_replay_sends_1_through_var2_and_minus_2_through_var1_summed_at_x(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    order = [(s.label, s.name) for s in steps(report)]
    assert order[0] == ("SubBackward0", "z") and order[-1] == ("AccumulateGrad", "x")
    assert sorted(order) == sorted([("SubBackward0", "z"), ("AddBackward0", "var2"), ("MulBackward0", "var1"),
                                    ("AccumulateGrad", "x"), ("AccumulateGrad", "y")])
    by_name = {s.name: s for s in steps(report)}
    assert [f.formula for f in by_name["z"].sent] == ["grad_var2 = grad_out = 1", "grad_var1 = −grad_out = −(1) = -1"]
    assert [f.formula for f in by_name["var1"].sent] == ["grad_x = grad_out · other = -1 · 2 = -2"]
    assert by_name["x"].summed == "1 (from var2 (AddBackward0)) + -2 (from var1 (MulBackward0)) = -1"
    assert by_name["x"].sent[-1].formula == "x.grad = -1 (it was None)"
    assert by_name["var1"].line == 3 and by_name["var1"].code == "2*x"


def test_replay_steps_point_at_drawn_graph_nodes(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    drawn = {n.id: n for n in report.graphs[0].nodes}
    assert report.backward_steps[0].graph == 0
    for step in steps(report):
        assert drawn[step.node].label == step.label and drawn[step.node].name == step.name


def test_a_tensor_used_twice_gets_both_gradients_summed(ip: Any) -> None:
    report, _ = report_of(ip, "x = torch.tensor(3., requires_grad=True)\ny = x * x\ny.backward()")
    mul, acc = steps(report)
    assert [f.to for f in mul.sent] == ["x", "x"]
    assert [f.formula for f in mul.sent] == ["grad_x = grad_out · other = 1 · 3 = 3",
                                             "grad_x = grad_out · self = 1 · 3 = 3"]
    assert acc.summed == "3 (from y (MulBackward0)) + 3 (from y (MulBackward0)) = 6"


def test_a_second_backward_adds_onto_the_earlier_grad(ip: Any) -> None:
    body = "x = torch.tensor(2., requires_grad=True)\ny = x * 5\ny.backward(retain_graph=True)\ny.backward()"
    report, _ = report_of(ip, body)
    assert len(report.backward_steps) == 2
    first, second = (steps(report, i)[-1] for i in range(2))
    assert first.sent[-1].formula == "x.grad = 5 (it was None)"
    assert second.sent[-1].formula == "x.grad = 5 + 5 = 10"
    assert second.before.values == 5.0 and second.after.values == 10.0


def test_create_graph_replay_reads_values_and_keeps_results(ip: Any) -> None:
    body = "x = torch.tensor(3., requires_grad=True)\ny = x ** 3\n" \
           "(g,) = torch.autograd.grad(y, x, create_graph=True)\ng.backward()\nresult = (g.item(), x.grad.item())"
    report, cell = report_of(ip, body)
    assert cell.error is None and ip.user_ns["result"] == (27.0, 18.0)
    pow_step = steps(report, 0)[0]
    assert pow_step.label == "PowBackward0"
    assert pow_step.sent[0].formula == "grad_x = grad_out · p · x^(p−1) = 1 · 27 = 27"
    assert all(s.label != "AccumulateGrad" for s in steps(report, 0))  # autograd.grad writes no .grad
    assert steps(report, 1)[-1].label == "AccumulateGrad"


CUSTOM = """class Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t * 2
    @staticmethod
    def backward(ctx, g):
        return g * 2
x = torch.tensor([1., 2.], requires_grad=True)
y = Twice.apply(x).sum()
y.backward()"""


def test_a_custom_function_is_named_by_its_class_without_a_formula(ip: Any) -> None:
    report, _ = report_of(ip, CUSTOM)
    custom = next(s for s in steps(report) if s.label == "TwiceBackward")
    assert "your autograd.Function Twice" in custom.words
    assert custom.sent[0].formula == "grad_x = [2, 2]"


def test_a_custom_functions_node_carries_the_line_that_applied_it(ip: Any) -> None:
    report, _ = report_of(ip, CUSTOM)
    node = next(n for n in report.graphs[0].nodes if n.label == "TwiceBackward")
    assert node.line == 9 and "Twice.apply(x)" in node.code  # the body's line, as a traceback counts


def test_a_function_applied_on_two_lines_gets_no_guessed_line(ip: Any) -> None:
    body = CUSTOM.replace("y = Twice.apply(x).sum()", "w = Twice.apply(x)\ny = Twice.apply(w).sum()")
    report, _ = report_of(ip, body)
    lines = {n.line for n in report.graphs[0].nodes if n.label == "TwiceBackward"}
    assert lines == {None}


def test_a_folded_loop_says_its_steps_highlight_the_folded_box(ip: Any) -> None:
    body = "x = torch.tensor(1.5, requires_grad=True)\nh = x\nfor _ in range(12):\n    h = h * 1.1\nh.backward()"
    report, _ = report_of(ip, body)
    replay = report.backward_steps[0]
    assert len(replay.steps) == 13 and any("drawn as one ×N box" in note for note in replay.notes)
    box = next(n for n in report.graphs[0].nodes if n.repeat > 1)
    assert sum(s.node == box.id for s in replay.steps) == box.repeat >= 8


def test_many_backward_calls_at_a_line_say_which_are_replayed(ip: Any) -> None:
    body = "x = torch.tensor(1., requires_grad=True)\nfor _ in range(5):\n    (x * 2).backward()"
    report, _ = report_of(ip, body)
    assert len(report.backward_steps) == 3
    assert "ran backward 5 times; its first 3 calls are replayed" in report.backward_steps[0].notes[0]
    assert report.backward_steps[2].steps[-1].sent[-1].formula == "x.grad = 4 + 2 = 6"


def test_a_long_chain_is_capped_and_says_so(ip: Any) -> None:
    body = "x = torch.tensor(1., requires_grad=True)\nh = x\nfor _ in range(700):\n    h = h + 1\nh.backward()"
    report, _ = report_of(ip, body)
    replay = report.backward_steps[0]
    assert len(replay.steps) == 500 and replay.dropped == 201
    assert any("201 later steps were counted" in note for note in replay.notes)
    text = render_text(report)
    assert "(+201 not recorded)" in text and "  ... 488 more steps (all in report.backward_steps)" in text
    assert "  500. AccumulateGrad" not in text and "  498. AddBackward0" in text


def test_big_gradients_are_summarised_in_steps(ip: Any) -> None:
    report, _ = report_of(ip, "w = torch.ones(20, 20, requires_grad=True)\n(w * 3).sum().backward()")
    mul = next(s for s in steps(report) if s.label == "MulBackward0")
    sent = mul.sent[0].value
    assert sent.values is None and sent.shape == (20, 20) and sent.low == sent.high == 3.0
    assert mul.sent[0].formula == "grad_w = grad_out · other = (20, 20) norm 60 in [3, 3]"


def test_the_replay_is_in_the_json_and_the_text(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    data = json.loads(report.to_json())
    assert [s["label"] for s in data["backward_steps"][0]["steps"]][0] == "SubBackward0"
    text = render_text(report)
    assert "Backward replay 1: z.backward() at line 6, 5 steps" in text
    assert "  4. MulBackward0 (var1 = 2*x): gradient arrived -1" in text


# -- invisible: hooks gone, counts equal, nothing kept ------------------------------------------------
HOOKED = """seen = []
x = torch.randn(3, requires_grad=True)
x.register_hook(lambda g: seen.append('tensor'))
x.register_post_accumulate_grad_hook(lambda p: seen.append('post'))
h = x * 2
h.register_hook(lambda g: seen.append('inner'))
h.grad_fn.register_hook(lambda gi, go: seen.append('node'))
h.grad_fn.register_prehook(lambda go: seen.append('pre'))
for _ in range(4):
    (h * h).sum().backward(retain_graph=True)
"""


def test_user_hook_counts_are_the_same_plain_and_replayed(ip: Any) -> None:
    outcomes = []
    for prefix in ("", "%%autograd -q\n"):
        ip.reset(new_session=False)
        run(ip, "import torch\ntorch.manual_seed(0)")
        assert run(ip, prefix + HOOKED).error is None
        outcomes.append((list(ip.user_ns["seen"]), ip.user_ns["x"].grad.tolist()))
    assert outcomes[0] == outcomes[1] and len(outcomes[0][0]) == 4 * 5


def count_steps(monkeypatch: Any) -> list[int]:
    """Count every replay hook call: after the cell, none of ours may fire."""
    import autograd_magic.capture.replay as replay

    calls: list[int] = []
    real = replay._step

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)
    monkeypatch.setattr(replay, "_step", counted)
    return calls


def test_no_replay_hook_is_left_on_the_graph_after_the_cell(ip: Any, monkeypatch: Any) -> None:
    calls = count_steps(monkeypatch)
    report, cell = report_of(ip, "x = torch.ones(2, requires_grad=True)\nh = x * 3\nout = h.sum()\n"
                                 "out.backward(retain_graph=True)")
    recorded = len(calls)
    assert cell.error is None and recorded == len(report.backward_steps[0].steps) == 3
    assert run(ip, "out.backward()").error is None
    assert len(calls) == recorded


def test_hooks_are_removed_when_backward_raises(ip: Any, monkeypatch: Any) -> None:
    calls = count_steps(monkeypatch)
    body = """class Bad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t * 2
    @staticmethod
    def backward(ctx, g):
        if fail:
            raise ValueError('no')
        return g * 2
fail = True
x = torch.ones(2, requires_grad=True)
out = Bad.apply(x * 3).sum()
try:
    out.backward(retain_graph=True)
except ValueError:
    pass"""
    report, cell = report_of(ip, body)
    assert cell.error is None and [s.label for s in report.backward_steps[0].steps] == ["SumBackward0"]
    recorded = len(calls)
    assert run(ip, "fail = False\nout.backward()").error is None and ip.user_ns["x"].grad.tolist() == [6.0, 6.0]
    assert len(calls) == recorded


def test_replay_keeps_no_tensor_alive(ip: Any) -> None:
    body = "x = torch.randn(50, requires_grad=True)\nh = (x * 2).exp()\nh.sum().backward()\n" \
           "refs = [weakref.ref(t) for t in (x, h, x.grad)]"
    run(ip, "import weakref")
    report, cell = report_of(ip, body)
    assert cell.error is None and report.backward_steps[0].steps
    refs = ip.user_ns.pop("refs")
    for name in ("x", "h"):
        del ip.user_ns[name]
    ip.user_ns.pop("_", None)
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert isinstance(refs[0], weakref.ref)


def test_no_value_is_read_while_a_profiler_records(ip: Any) -> None:
    body = "with torch.profiler.profile() as prof:\n    x = torch.ones(2, requires_grad=True)\n" \
           "    (x * 3).sum().backward()\nnames = sorted(e.name for e in prof.events())"
    report, cell = report_of(ip, body)
    assert cell.error is None
    assert all(n.value is None for g in report.graphs for n in g.nodes if n.label != "AccumulateGrad")
    assert all(v is None for s in steps(report) for v in s.arrived)


def test_values_of_nodes_made_in_an_earlier_recorded_cell_are_shown(ip: Any) -> None:
    run(ip, "%%autograd -q\nx = torch.tensor([5.], requires_grad=True)\nvar1 = 2*x\nz = var1 + 1")
    report, _ = report_of(ip, "z.backward()")
    values = {name: node.value.values for name, node in nodes_by_name(report).items() if node.value}
    assert values == {"z": [11.0], "var1": [10.0], "x": [5.0]}


def test_an_earlier_value_is_not_shown_once_the_tensor_was_written(ip: Any) -> None:
    run(ip, "%%autograd -q\nx = torch.tensor([5.], requires_grad=True)\nz = x * 2")
    run(ip, "z.detach().add_(1)")  # shares the version counter: the value we read is stale
    report, _ = report_of(ip, "z.backward()")
    assert nodes_by_name(report)["z"].value is None


def test_the_static_html_lists_the_numbered_steps(ip: Any) -> None:
    report, _ = report_of(ip, SEED)
    page = render_html(report)
    assert "Backward replay 1: z.backward() at line 6, 5 steps" in page
    assert '<li value="4"><b>MulBackward0</b> (var1 = 2*x): gradient arrived <code>-1</code>' in page
    assert "<code>grad_x = grad_out · other = -1 · 2 = -2</code>" in page
    assert "1 (from var2 (AddBackward0)) + -2 (from var1 (MulBackward0)) = -1" in page


def test_a_failure_while_attaching_leaves_no_hook_behind(ip: Any, monkeypatch: Any) -> None:
    import autograd_magic.capture.replay as replay
    import autograd_magic.internal as internal

    calls = count_steps(monkeypatch)
    real = replay._LeafWatch.__init__

    def failing(self: Any, leaf: Any) -> None:
        real(self, leaf)
        raise RuntimeError("our bug")
    monkeypatch.setattr(replay._LeafWatch, "__init__", failing)
    monkeypatch.setattr(internal, "RAISE", False)
    report, cell = report_of(ip, "x = torch.ones(2, requires_grad=True)\nout = (x * 3).sum()\n"
                                 "out.backward(retain_graph=True)\ng = x.grad.tolist()")
    assert cell.error is None and ip.user_ns["g"] == [3.0, 3.0]
    assert run(ip, "out.backward()").error is None and calls == []


def test_values_are_read_only_for_tensors_autograd_tracks(ip: Any, monkeypatch: Any) -> None:
    import autograd_magic.capture.snapshot as snapshot

    read: list[tuple[int, ...]] = []
    real = snapshot.value_of

    def counted(t: Any) -> Any:
        read.append(tuple(t.shape))
        return real(t)
    monkeypatch.setattr(snapshot, "value_of", counted)
    report_of(ip, "data = torch.randn(300, 300)\nscaled = data * 2\nw = torch.ones(3, requires_grad=True)\n"
                  "loss = (w * 2).sum()")
    assert sorted(read) == [(), (3,), (3,)]  # w when made, w * 2 and the sum: never the data


def test_a_gradient_changed_in_place_by_a_hook_is_read_again(ip: Any) -> None:
    """What one node sends is the tensor the next receives, and its summary is reused; a tensor hook that
    multiplies it in place changes its version, so the next node shows what truly arrived."""
    body = ("x = torch.tensor([2.], requires_grad=True)\ny = x * 5\nh = y * 3\n"
            "y.register_hook(lambda g: g.mul_(10))\nh.backward()")
    plain = run(ip, body.replace("h.backward()", "h.backward()\nprint(x.grad)"))
    report, _ = report_of(ip, body)
    by_name = {s.name: s for s in steps(report)}
    assert [v.values for v in by_name["h"].arrived] == [[1.0]]
    assert [v.values for v in by_name["y"].arrived] == [[30.0]]  # 3 sent by h, times 10 by the hook
    assert by_name["x"].sent[-1].formula == "x.grad = 150 (it was None)"
    assert "150." in plain.stdout
