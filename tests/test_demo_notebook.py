"""demo.ipynb, executed by nbclient the way ``scripts/execute_demo.py`` does it.

Per section of the tutorial: the report is there in every representation a
frontend may pick (widget state, ``text/html``, the full ``text/plain``), the
printed values are the tutorial's, and each diagnostic appears in its cell.
"""

from __future__ import annotations

import re
from typing import Any

import nbformat
import pytest
from e2e_util import (
    DEMO,
    WIDGET_STATE,
    WIDGET_VIEW,
    code_cells,
    copy_demo,
    diagnostic_kinds,
    environ,
    execute_demo_module,
    find_cell,
    is_autograd_cell,
    isolated_env,
    report_outputs,
    report_text,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A temp copy of the demo, executed in a fresh kernel of this venv with an isolated Jupyter."""
    work = tmp_path_factory.mktemp("demo")
    source = copy_demo(work)
    with environ(isolated_env(work / "jupyter")):
        return execute_demo_module().execute(source, work / "executed.ipynb", timeout=120)


def stdout(cell: Any) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def errors(cell: Any) -> list[str]:
    return [o.ename for o in cell.outputs if o.output_type == "error"]


def saved_report(nb: Any, cell: Any) -> dict[str, Any]:
    """The report as the cell's widget holds it in the saved widget state (what a reopened notebook shows)."""
    model_id = report_outputs(cell)[0]["data"][WIDGET_VIEW]["model_id"]
    return dict(nb.metadata["widgets"][WIDGET_STATE]["state"][model_id]["state"]["report"])


# --- every report, every representation ---------------------------------------------------------


def test_every_autograd_cell_shows_one_report_with_html_and_full_text(executed: Any) -> None:
    cells = [c for c in code_cells(executed) if is_autograd_cell(c)]
    assert len(cells) >= 15
    for cell in cells:
        text = report_text(cell)
        data = report_outputs(cell)[0]["data"]
        assert "text/html" in data, cell.source
        assert '<div class="agm"' in data["text/html"] or 'class="agm' in data["text/html"]
        assert len(text) > 110 and "Variables" in text, "text/plain must be the full report, not a widget repr"
        assert "autograd_magic failed while" not in text, text


def test_widget_state_is_stored_for_every_report(executed: Any) -> None:
    state = executed.metadata["widgets"][WIDGET_STATE]["state"]
    for cell in (c for c in code_cells(executed) if is_autograd_cell(c)):
        data = report_outputs(cell)[0]["data"]
        assert WIDGET_VIEW in data, cell.source
        assert data[WIDGET_VIEW]["model_id"] in state


def test_only_tagged_cells_raise_and_run_all_goes_on(executed: Any) -> None:
    for cell in code_cells(executed):
        tagged = "raises-exception" in cell.metadata.get("tags", [])
        assert bool(errors(cell)) == tagged, cell.source
    assert all(c.execution_count for c in code_cells(executed)), "a cell after a failing one did not run"


def test_no_warnings_or_stderr_from_the_magic(executed: Any) -> None:
    for cell in code_cells(executed):
        noise = [o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not noise, f"{cell.source.splitlines()[:2]}: {noise}"


# --- section by section ------------------------------------------------------------------------


def test_creation_cell_lists_tensor_and_numpy_array(executed: Any) -> None:
    cell = find_cell(executed, "torch.zeros(3,3)")
    text = report_text(cell)
    assert re.search(r"^\s+arr\s+\(2, 2\)\s+float64", text, re.M)
    assert re.search(r"^\s+x\s+\(3, 3\)\s+float32", text, re.M)
    assert "dtype=torch.float64" in stdout(cell)
    assert diagnostic_kinds(text) == []


def test_random_values_and_indexing_match_the_tutorial(executed: Any) -> None:
    out = stdout(find_cell(executed, "x[:,[0,2]]"))
    assert "[0.4963, 0.7682, 0.0885]" in out  # torch.manual_seed(0) as in the tutorial
    assert "[0.4963, 0.0885]" in out


def test_numpy_conversion_notes_shared_memory(executed: Any) -> None:
    text = report_text(find_cell(executed, "arr = x.numpy()"))
    assert "shared-memory" in diagnostic_kinds(text)
    assert "`arr`" in text and "`x`" in text


def test_alias_cell_warns_about_the_write_through_z(executed: Any) -> None:
    cell = find_cell(executed, "z = x\n", "z[0] = 5")
    text = report_text(cell)
    assert diagnostic_kinds(text).count("alias-write") == 1
    assert "[alias-write]" in text and "z[0] = 5" in text
    assert "x:  tensor([5, 2, 3, 4])" in stdout(cell)


@pytest.mark.parametrize("fragment", ["z = x.clone()", "z = x+1"])
def test_clone_and_new_tensor_cells_raise_no_alias_warning(executed: Any, fragment: str) -> None:
    text = report_text(find_cell(executed, fragment))
    assert "alias-write" not in diagnostic_kinds(text)
    assert "x:  tensor([1, 2, 3, 4])" in stdout(find_cell(executed, fragment))


def test_intermediates_get_their_grad_fn(executed: Any) -> None:
    text = report_text(find_cell(executed, "# Create intermediate variables"))
    assert re.search(r"^\s+var1\s.*MulBackward0", text, re.M)
    assert re.search(r"^\s+var2\s.*AddBackward0", text, re.M)
    assert re.search(r"^\s+z\s.*SubBackward0", report_text(find_cell(executed, "# Create final variable: z")), re.M)


def test_backward_cell_draws_the_graph_with_leaves_x_and_y_and_their_gradients(executed: Any) -> None:
    cell = find_cell(executed, "# Auto-differentiate")
    text = report_text(cell)
    assert re.search(r"^Graph 1: root z \(built in In \[\d+\], backward at line 2\)", text, re.M)  # body line 2
    assert re.search(r"^\s+x AccumulateGrad \(1\) value = 5  grad = -1$", text, re.M)  # dz/dx = -1, as taught
    assert re.search(r"^\s+var1 MulBackward0 .* value = 10  <-", text, re.M)  # read when In [15] ran 2*x
    assert "summed over paths: 1 (from var2 (AddBackward0)) + -2 (from var1 (MulBackward0)) = -1" in text
    for label in ("SubBackward0", "AddBackward0", "MulBackward0"):
        assert label in text
    assert re.search(r"^\s+x AccumulateGrad", text, re.M) and re.search(r"^\s+y AccumulateGrad", text, re.M)
    html = report_outputs(cell)[0]["data"]["text/html"]
    svg_texts = re.findall(r"<text[^>]*>([^<]*)</text>", html)
    assert "<svg" in html and {"x", "y"} <= set(svg_texts)
    grads = stdout(find_cell(executed, "dz_dx = x.grad"))
    assert "dz_dx:  tensor([-1.])" in grads and "dz_dy:  tensor([1.])" in grads
    assert re.search(r"^\s+x: \[-1\]", report_text(find_cell(executed, "dz_dx = x.grad")), re.M)


def test_complex_example_graph_and_gradients(executed: Any) -> None:
    forward = find_cell(executed, "c = torch.norm(torch.sin(a) @ torch.pow(b,2))")
    assert "c: tensor(3.4619" in stdout(forward)
    text = report_text(find_cell(executed, "# Use .backward() to compute gradients of c"))
    for label in ("LinalgVectorNormBackward0", "MmBackward0", "SinBackward0", "PowBackward0"):
        assert label in text
    assert re.search(r"^\s+a AccumulateGrad", text, re.M) and re.search(r"^\s+b AccumulateGrad", text, re.M)
    assert re.search(r"^\s+a: \[0\.09382", text, re.M)


def test_second_backward_is_explained(executed: Any) -> None:
    cell = find_cell(executed, "# Calling backward() on c a second time")
    assert errors(cell) == ["RuntimeError"]
    text = report_text(cell)
    assert "backward-twice" in diagnostic_kinds(text)
    assert "retain_graph=True" in text


def test_retain_graph_lets_gradients_accumulate(executed: Any) -> None:
    cell = find_cell(executed, "loss.backward(retain_graph=True)")
    assert "after 2nd backward: tensor([12.])" in stdout(cell)
    assert re.search(r"^\s+w: \[12\]", report_text(cell), re.M)
    assert "before this backward: [6]" in report_text(cell)


def test_backward_on_a_vector_is_explained_and_fixed(executed: Any) -> None:
    failing = find_cell(executed, "v = x * 2")
    assert errors(failing) == ["RuntimeError"]
    assert "backward-non-scalar" in diagnostic_kinds(report_text(failing))
    assert "x.grad: tensor([2., 2., 2.])" in stdout(find_cell(executed, "v.sum().backward()"))


def test_requires_grad_on_leaves_only_shows_the_intermediate_gradient(executed: Any) -> None:
    cell = find_cell(executed, "h = p * 3")
    assert "h.requires_grad: True  h.is_leaf: False" in stdout(cell)
    text = report_text(cell)
    assert re.search(r"^\s+h: \[12\].*intermediate", text, re.M)
    assert re.search(r"^\s+p: \[36\]", text, re.M)


def test_detach_cell_notes_the_graph_break(executed: Any) -> None:
    cell = find_cell(executed, "print(c.detach())")
    assert "tensor(3.4619)" in stdout(cell)
    assert "graph-break" in diagnostic_kinds(report_text(cell))
    # c's graph was built and freed by earlier cells: the title must not say it was never backwarded
    title = next(line for line in report_text(cell).splitlines() if line.startswith("Graph 1:"))
    assert re.match(r"Graph 1: root c \(built in In \[\d+\], no backward\(\) from it in this cell\)", title)


def test_summaries_count_in_plain_english(executed: Any) -> None:
    summaries = [report_text(c).splitlines()[0] for c in code_cells(executed) if is_autograd_cell(c)]
    assert not [s for s in summaries if "(s)" in s or re.search(r"\b1 (tensors|graphs|torch calls)\b", s)]
    assert any(" 1 graph," in s for s in summaries) and any(" 1 tensor," in s for s in summaries)


def test_closing_cell_explains_why_backward_has_no_graph(executed: Any) -> None:
    cell = find_cell(executed, "b = torch.tensor(b.detach().numpy())", "b.backward()")
    assert "raises-exception" in cell.metadata["tags"]
    assert errors(cell) == ["RuntimeError"]
    text = report_text(cell)
    assert "[backward-no-grad-fn]" in text
    assert ".detach()" in text and "NumPy" in text
    assert cell.outputs[-1].output_type == "error", "the report comes before the traceback"


# --- watching the backward pass ------------------------------------------------------------------

REPLAY_CELL = "%%autograd -o report\nx = torch.tensor([5.], requires_grad=True)"


def test_replay_sends_1_through_var2_and_minus_2_through_var1_summed_at_x(executed: Any) -> None:
    cell = find_cell(executed, REPLAY_CELL)
    (replay,) = saved_report(executed, cell)["backward_steps"]
    steps = replay["steps"]
    # the order the markdown walks through, step by step, as the replay panel words each step
    heads = [s["lines"][0].strip() for s in steps]
    assert [s["label"] for s in steps] == ["SubBackward0", "AddBackward0", "AccumulateGrad", "MulBackward0",
                                           "AccumulateGrad"]
    assert heads[0] == "1. SubBackward0 (z = var2 - var1): gradient arrived 1"
    assert "grad_var2 = grad_out = 1" in steps[0]["lines"][2] and steps[0]["lines"][3].endswith("= -1")
    assert "grad_x = grad_out = 1" in " ".join(steps[1]["lines"])
    assert "grad_x = grad_out · other = -1 · 2 = -2" in " ".join(steps[3]["lines"])
    assert heads[4] == "5. AccumulateGrad (x): gradient arrived -1"
    assert "1 (from var2 (AddBackward0)) + -2 (from var1 (MulBackward0)) = -1" in steps[4]["lines"][1]
    assert "Backward replay 1: z.backward() at line 6, 5 steps" in report_text(cell)


def test_why_answers_x_as_two_paths_summed_and_w_as_not_a_leaf(executed: Any) -> None:
    x_answer = stdout(find_cell(executed, 'print(report.why("x"))'))
    assert x_answer.startswith("x.grad is -1, from backward() at line 6")
    assert "1 (from var2 (AddBackward0)) + -2 (from var1 (MulBackward0)) = -1" in x_answer
    made = find_cell(executed, "requires_grad=True).double()")
    assert "w.is_leaf: False" in stdout(made) and diagnostic_kinds(report_text(made)) == []
    w_answer = stdout(find_cell(executed, 'print(report.why("w"))'))
    assert w_answer.startswith("w.grad is None because w is not a leaf")
    assert ".double()` at line 1" in w_answer and "w.retain_grad()" in w_answer


def test_custom_function_is_named_by_its_class_with_the_gradient_its_backward_sent(executed: Any) -> None:
    cell = find_cell(executed, "class Cube(torch.autograd.Function)")
    assert "x.grad: tensor([6.])" in stdout(cell)  # the wrong gradient: 3 * x, not 3 * x**2 = 12
    text = report_text(cell)
    assert re.search(r"^\s+y\s.*CubeBackward", text, re.M)
    first = saved_report(executed, cell)["backward_steps"][0]["steps"][0]
    assert first["label"] == "CubeBackward" and "your autograd.Function Cube" in first["lines"][1]
    assert first["lines"][2].strip() == "grad_x = 6"
    caught = [line for line in text.splitlines() if "gradcheck" in line]
    assert caught and "Cube" in text and diagnostic_kinds(text).count("gradcheck") == 1, text


# --- a real model -------------------------------------------------------------------------------


def test_model_cell_folds_its_modules_and_records_every_training_step(executed: Any) -> None:
    cell = find_cell(executed, "nn.Flatten(), nn.Linear(16, 2)")
    report = saved_report(executed, cell)
    graph = report["graphs"][0]
    boxes = {m["name"]: m["cls"] for m in graph["modules"]}
    assert boxes == {"loss_fn": "CrossEntropyLoss", "model": "Sequential"}
    folded = {n["name"]: n["label"] for n in graph["nodes"] if n["kind"] == "module"}  # --depth 1
    assert folded == {"model.0": "Conv2d", "model.1": "ReLU", "model.2": "MaxPool2d", "model.3": "Conv2d",
                      "model.4": "ReLU", "model.5": "AdaptiveAvgPool2d", "model.6": "Flatten", "model.7": "Linear"}
    training = report["training"]
    assert training["calls"] == 20 and [s["step"] for s in training["steps"]] == list(range(1, 21))
    assert training["steps"][-1]["loss"] < training["steps"][0]["loss"]
    assert all(set(s["grad_norms"]) == set(training["parameters"]) for s in training["steps"])
    assert len(training["parameters"]) == 6 and diagnostic_kinds(report_text(cell)) == []


def test_unused_head_never_gets_a_gradient(executed: Any) -> None:
    cell = find_cell(executed, "class TwoHeads(nn.Module)")
    text = report_text(cell)
    assert diagnostic_kinds(text) == ["never-gets-gradient"]
    assert "`net.aux_head.weight`, `net.aux_head.bias` require grad but never got a gradient in 20" in text
    steps = saved_report(executed, cell)["training"]["steps"]
    assert len(steps) == 20 and not any("net.aux_head.weight" in s["grad_norms"] for s in steps)
    assert all("net.head.weight" in s["grad_norms"] for s in steps)


# --- the committed notebook --------------------------------------------------------------------


def test_committed_demo_is_saved_executed() -> None:
    nb = nbformat.read(DEMO, as_version=4)
    counts = [c.execution_count for c in code_cells(nb)]
    assert all(counts) and counts == sorted(counts), "re-run scripts/execute_demo.py"
    for cell in (c for c in code_cells(nb) if is_autograd_cell(c)):
        assert "text/html" in report_outputs(cell)[0]["data"], cell.source
    assert nb.metadata["widgets"][WIDGET_STATE]["state"], "saved without widget state"


def test_committed_demo_is_not_stale(executed: Any) -> None:
    """The saved outputs say what the package says today (else: re-run scripts/execute_demo.py)."""
    committed = code_cells(nbformat.read(DEMO, as_version=4))
    fresh = code_cells(executed)
    assert [c.source for c in committed] == [c.source for c in fresh]
    for old, new in zip(committed, fresh, strict=True):
        assert stdout(old) == stdout(new), old.source
        if is_autograd_cell(old):
            assert diagnostic_kinds(report_text(old)) == diagnostic_kinds(report_text(new)), old.source
