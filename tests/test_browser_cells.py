"""Single cells in JupyterLab, in headless Chromium, light and dark theme: one server and one notebook
for the views that the demo does not hold.

- Memory kept for backward: the line under a small CNN's graph, and the toggle that colours its nodes by
  what they keep (artifacts/memory-light.png, memory-dark.png).
- Non-finite values: a loss that became -inf at ``torch.log``, its origin node red with ``⚠ inf`` and the
  nodes that carry it tinted (artifacts/nonfinite-light.png, nonfinite-dark.png).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from e2e_util import artifact_path, chromium_context, jupyter_lab, require_chromium
from test_browser import KERNEL_READY, LOW_CONTRAST, change_theme

pytestmark = [pytest.mark.browser, pytest.mark.slow]
MEMORY_CELL = ("%%autograd\n"
               "model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),\n"
               "                            torch.nn.Flatten(), torch.nn.Linear(8 * 15 * 15, 10))\n"
               "x = torch.randn(32, 3, 32, 32)\n"
               "loss = torch.nn.functional.cross_entropy(model(x), torch.zeros(32, dtype=torch.long))\n"
               "loss.backward()")
NONFINITE_CELL = ("%%autograd\n"
                  "x = torch.tensor([0., 1., 4.], requires_grad=True)\n"
                  "w = torch.tensor([0.5, 2., 1.], requires_grad=True)\n"
                  "y = torch.log(x)\n"
                  "loss = (y * w).sum()\n"
                  "loss.backward()")
CELLS = ["import torch\n%load_ext autograd_magic", MEMORY_CELL, NONFINITE_CELL]
THEMES = [("JupyterLab Light", True), ("JupyterLab Dark", False)]
# the fill each graph node is drawn with, as the browser computes it
FILLS = """(view) => [...view.querySelectorAll('svg g.node')].map((g) => {
  const shape = g.querySelector('path, polygon, ellipse');
  return shape ? getComputedStyle(shape).fill : '';
})"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    base = tmp_path_factory.mktemp("lab-cells")
    root = base / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, root / "cells.ipynb")
    with jupyter_lab(root, base / "jupyter") as server, chromium_context(base / "profile") as context:
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        tab.goto(server.url("lab/tree/cells.ipynb?reset"))
        tab.wait_for_selector(".jp-Notebook .jp-Cell")
        tab.wait_for_function(KERNEL_READY, timeout=90_000)
        tab.get_by_role("menuitem", name="Run", exact=True).click()
        tab.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        tab.locator(".agm-w").nth(len(CELLS) - 2).locator("svg g.node").first.wait_for(timeout=120_000)
        yield tab


def view_of(page: Any, cell: str) -> Any:
    """The widget below the cell whose source is ``cell`` (its first line after the magic)."""
    mark = cell.splitlines()[1]
    return page.locator(".jp-Cell", has_text=mark).locator(".agm-w").first


@pytest.mark.parametrize(("theme", "light"), THEMES)
def test_memory_line_and_toggle_read_in_light_and_dark(page: Any, theme: str, light: bool) -> None:
    change_theme(page, theme, light)
    view = view_of(page, MEMORY_CELL)
    line = view.locator(".agm-memory")
    assert line.inner_text().startswith("memory kept for backward: ")
    assert "ReluBackward0" in line.inner_text()  # a holder, with its line
    toggle = view.get_by_role("button", name="memory kept")
    if toggle.get_attribute("aria-pressed") == "true":  # left on by the other theme's run
        toggle.click()
    before = view.evaluate(FILLS)
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    after = view.evaluate(FILLS)
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= 3  # relu, pool, linear: tinted by what they keep
    page.mouse.move(0, 0)  # off the toggle: a hovered button is lighter
    assert page.evaluate(LOW_CONTRAST) == [], theme
    view.screenshot(path=str(artifact_path(f"memory-{'light' if light else 'dark'}.png")))


@pytest.mark.parametrize(("theme", "light"), THEMES)
def test_nan_origin_is_marked_and_reads_in_light_and_dark(page: Any, theme: str, light: bool) -> None:
    change_theme(page, theme, light)
    page.mouse.move(0, 0)  # off whatever the last click left it hovering (a hovered button is lighter)
    view = view_of(page, NONFINITE_CELL)
    assert "non-finite" in view.inner_text()
    origin = view.locator("svg g.node.agm-nonfinite", has_text="⚠ inf")
    assert origin.count() == 1 and "LogBackward0" in (origin.text_content() or "")
    assert view.locator("svg g.node.agm-nonfinite").count() >= 3  # the loss and y * w carry it
    assert page.evaluate(LOW_CONTRAST) == [], theme
    view.screenshot(path=str(artifact_path(f"nonfinite-{'light' if light else 'dark'}.png")))
