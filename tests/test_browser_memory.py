"""The memory view in JupyterLab, in headless Chromium: the "memory kept for backward" line under a small
CNN's graph, and the toggle that colours its nodes by what they keep, in the light and dark theme.
Screenshots go to artifacts/memory-light.png and artifacts/memory-dark.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from e2e_util import artifact_path, chromium_context, jupyter_lab, require_chromium
from test_browser import KERNEL_READY, LOW_CONTRAST, set_theme

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CELLS = ["import torch\n%load_ext autograd_magic",
         "%%autograd\n"
         "model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),\n"
         "                            torch.nn.Flatten(), torch.nn.Linear(8 * 15 * 15, 10))\n"
         "x = torch.randn(32, 3, 32, 32)\n"
         "loss = torch.nn.functional.cross_entropy(model(x), torch.zeros(32, dtype=torch.long))\n"
         "loss.backward()"]
# the fill each graph node is drawn with, as the browser computes it
FILLS = """(view) => [...view.querySelectorAll('svg g.node')].map((g) => {
  const shape = g.querySelector('path, polygon, ellipse');
  return shape ? getComputedStyle(shape).fill : '';
})"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    base = tmp_path_factory.mktemp("lab-memory")
    root = base / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, Path(root / "memory.ipynb"))
    with jupyter_lab(root, base / "jupyter") as server, chromium_context(base / "profile") as context:
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        tab.goto(server.url("lab/tree/memory.ipynb?reset"))
        tab.wait_for_selector(".jp-Notebook .jp-Cell")
        tab.wait_for_function(KERNEL_READY, timeout=90_000)
        tab.get_by_role("menuitem", name="Run", exact=True).click()
        tab.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        tab.wait_for_selector(".agm-w svg g.node", timeout=120_000)
        yield tab


@pytest.mark.parametrize(("theme", "light"), [("JupyterLab Light", True), ("JupyterLab Dark", False)])
def test_memory_line_and_toggle_read_in_light_and_dark(page: Any, theme: str, light: bool) -> None:
    set_theme(page_lab(page), theme, light)
    view = page.locator(".agm-w").first
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
    assert page.evaluate(LOW_CONTRAST) == [], theme
    view.screenshot(path=str(artifact_path(f"memory-{'light' if light else 'dark'}.png")))


class page_lab:  # noqa: N801 - the little of test_browser's Lab that set_theme uses
    def __init__(self, page: Any) -> None:
        self.page = page
