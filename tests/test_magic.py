"""The extension's lifecycle, options, help and error handling, through a real shell."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import run
from IPython.core.error import UsageError

import autograd_magic.internal as internal
from autograd_magic import Report


def test_load_twice_is_harmless_and_unload_removes_everything(shell: Any) -> None:
    run(shell, "%load_ext autograd_magic")
    managers = [c for c in shell.configurables if type(c).__name__ == "AutogradMagic"]
    assert len(managers) == 1
    run(shell, "%unload_ext autograd_magic")
    try:
        assert "autograd" not in shell.magics_manager.magics["cell"]
        assert "autograd" not in shell.magics_manager.magics["line"]
        assert not any(type(c).__name__ == "AutogradMagic" for c in shell.configurables)
        assert isinstance(run(shell, "%%autograd\nx = 1").error, UsageError)  # no such magic any more
    finally:
        run(shell, "%load_ext autograd_magic")
    assert run(shell, "%%autograd -q\nimport torch\nx = torch.ones(1)").error is None


def test_bad_option_raises_usage_error_with_usage_and_cell_does_not_run(ip: Any) -> None:
    result = run(ip, "%%autograd --bogus\nran = True")
    assert isinstance(result.error, UsageError)
    assert "usage: %autograd" in str(result.error) or "usage:" in str(result.error).lower()
    assert "ran" not in ip.user_ns


@pytest.mark.parametrize("line", ["--max-nodes zero", "--max-nodes 0", "--view pretty", "-o"])
def test_malformed_option_values_are_usage_errors(ip: Any, line: str) -> None:
    result = run(ip, f"%%autograd {line}\nran = True")
    assert isinstance(result.error, UsageError), line
    assert "ran" not in ip.user_ns


def test_line_magic_runs_one_statement_and_needs_one(ip: Any) -> None:
    result = run(ip, "%autograd -o rep y = torch.ones(2, requires_grad=True) * 2")
    assert result.error is None
    assert ip.user_ns["rep"].tensors["y"].grad_fn == "MulBackward0"
    assert ip.user_ns["rep"].tensors["y"].line == 1
    assert isinstance(run(ip, "%autograd -q").error, UsageError)


def test_help_shows_the_docstring_with_examples(ip: Any) -> None:
    doc = ip.find_cell_magic("autograd").__doc__
    assert "%%autograd" in doc and "-o" in doc and "--max-nodes" in doc


def test_out_option_stores_a_report_that_serialises(ip: Any) -> None:
    run(ip, "%%autograd -q -o rep\nx = torch.tensor([5.], requires_grad=True)\nz = (2 * x) ** 2\nz.backward()")
    report = ip.user_ns["rep"]
    assert isinstance(report, Report)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["gradients"]["x"] == [40.0]
    assert data["tensors"]["z"]["grad_fn"] == "PowBackward0"


def test_quiet_displays_nothing_and_default_displays_text_and_html(ip: Any) -> None:
    quiet = run(ip, "%%autograd -q\nx = torch.ones(1)")
    assert quiet.bundles == [] and quiet.stdout == ""
    loud = run(ip, "%%autograd\nx = torch.ones(1, requires_grad=True)\n(x * 2).sum().backward()")
    bundle = loud.bundles[0]
    assert "text/plain" in bundle and "text/html" in bundle
    assert "Gradients" in bundle["text/plain"] and "x: [2]" in bundle["text/plain"]


def test_text_view_prints_the_report(ip: Any) -> None:
    result = run(ip, "%%autograd --text\nx = torch.ones(1, requires_grad=True)\ny = x * 3")
    assert "MulBackward0" in result.stdout and result.bundles == []


def test_config_changes_defaults(ip: Any) -> None:
    run(ip, "%config AutogradMagic.quiet = True")
    try:
        assert run(ip, "%%autograd\nx = torch.ones(1)").bundles == []
    finally:
        run(ip, "%config AutogradMagic.quiet = False")
    assert run(ip, "%%autograd\nx = torch.ones(1)").bundles != []


def test_no_graph_and_max_nodes_options(ip: Any) -> None:
    body = "x = torch.ones(2, requires_grad=True)\nt = x\nfor i in range(30):\n    t = t * 1.01 + i\nt.sum().backward()"
    run(ip, "%%autograd -q -o rep --no-graph\n" + body)
    assert ip.user_ns["rep"].graphs == []
    run(ip, "%%autograd -q -o rep --max-nodes 3\n" + body)
    graph = ip.user_ns["rep"].graphs[0]
    assert len(graph.nodes) == 3 and graph.dropped > 0


def test_save_option_writes_json(ip: Any, tmp_path: Any) -> None:
    target = tmp_path / "report.json"
    run(ip, f"%%autograd -q --save {target}\nx = torch.ones(1, requires_grad=True)\n(x * 2).sum().backward()")
    assert json.loads(target.read_text())["gradients"]["x"] == [2.0]


def test_internal_failure_never_breaks_the_cell(ip: Any, monkeypatch: Any) -> None:
    import autograd_magic.magic as magic

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("our bug")

    monkeypatch.setattr(internal, "RAISE", False)
    monkeypatch.setattr(magic, "build_report", broken)
    result = run(ip, "%%autograd\nx = torch.ones(2) * 2\nprint('still here')")
    assert result.error is None
    assert "still here" in result.stdout
    assert "could not show the report" in result.stdout


def test_internal_failure_while_recording_is_reported_as_a_hint(ip: Any, monkeypatch: Any) -> None:
    import autograd_magic.capture.recorder as capture

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("our bug")

    monkeypatch.setattr(internal, "RAISE", False)
    monkeypatch.setattr(capture.Recorder, "_record", broken)
    result = run(ip, "%%autograd -o rep\nx = torch.ones(2) * 2\nprint(x)")
    assert result.error is None and "tensor([2., 2.])" in result.stdout
    assert any("recording an op" in hint for hint in ip.user_ns["rep"].hints)
