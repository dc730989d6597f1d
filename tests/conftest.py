"""Shared fixtures: one real IPython shell for the session, with our errors raised."""

from __future__ import annotations

import faulthandler
import gc
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import autograd_magic.internal as internal

internal.RAISE = True  # in tests our own failures must fail loudly


@pytest.fixture(scope="session")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext autograd_magic", store_history=False)
    return sh


@pytest.fixture()
def ip(shell: InteractiveShell) -> Iterator[InteractiveShell]:
    """The shell with a clean namespace (torch and numpy imported) for each test."""
    shell.reset(new_session=False)
    shell.run_cell("import torch\nimport numpy as np", store_history=False)
    yield shell
    gc.collect()


class CellResult:
    """What running one cell produced: stdout, displayed bundles, the error and Out value."""

    def __init__(self, result: Any, captured: Any) -> None:
        self.result = result
        self.stdout: str = captured.stdout
        self.stderr: str = captured.stderr
        self.outputs = captured.outputs
        self.error = result.error_in_exec or result.error_before_exec
        self.value = result.result

    @property
    def bundles(self) -> list[dict[str, Any]]:
        return [o.data for o in self.outputs]


CELL_WATCHDOG_S = 180  # a cell that hangs (a deadlock in a read of ours) ends the run with its stack, not a stall


def run(shell: InteractiveShell, source: str) -> CellResult:
    faulthandler.dump_traceback_later(CELL_WATCHDOG_S, exit=True)
    try:
        with capture_output() as captured:
            result = shell.run_cell(source, store_history=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
    return CellResult(result, captured)


def report_of(shell: InteractiveShell, body: str, options: str = "") -> tuple[Any, CellResult]:
    """Run ``body`` under ``%%autograd -q -o _rep`` and return the stored report."""
    shell.user_ns.pop("_agm_report", None)
    cell = run(shell, f"%%autograd -q -o _agm_report {options}\n{body}")
    return shell.user_ns.get("_agm_report"), cell


def kinds(report: Any) -> list[str]:
    return [d.kind for d in report.diagnostics]


@pytest.fixture(autouse=True)
def _no_mode_left() -> Iterator[None]:
    before = torch._C._len_torch_function_stack()
    yield
    assert torch._C._len_torch_function_stack() == before, "a torch function mode was left active"
