"""The non-finite marks in JupyterLab, in headless Chromium: a cell whose loss became -inf at ``torch.log``,
its origin node red with ``⚠ inf`` and the nodes that carry it tinted, readable in the light and dark theme.
Screenshots go to artifacts/nonfinite-light.png and artifacts/nonfinite-dark.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from e2e_util import artifact_path, chromium_context, jupyter_lab, require_chromium
from test_browser import KERNEL_READY, LOW_CONTRAST, set_theme
from test_browser_memory import page_lab

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CELLS = ["import torch\n%load_ext autograd_magic",
         "%%autograd\n"
         "x = torch.tensor([0., 1., 4.], requires_grad=True)\n"
         "w = torch.tensor([0.5, 2., 1.], requires_grad=True)\n"
         "y = torch.log(x)\n"
         "loss = (y * w).sum()\n"
         "loss.backward()"]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_chromium()
    base = tmp_path_factory.mktemp("lab-nonfinite")
    root = base / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(nb, Path(root / "nan.ipynb"))
    with jupyter_lab(root, base / "jupyter") as server, chromium_context(base / "profile") as context:
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        tab.goto(server.url("lab/tree/nan.ipynb?reset"))
        tab.wait_for_selector(".jp-Notebook .jp-Cell")
        tab.wait_for_function(KERNEL_READY, timeout=90_000)
        tab.get_by_role("menuitem", name="Run", exact=True).click()
        tab.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        tab.wait_for_selector(".agm-w svg g.node", timeout=120_000)
        yield tab


@pytest.mark.parametrize(("theme", "light"), [("JupyterLab Light", True), ("JupyterLab Dark", False)])
def test_nan_origin_is_marked_and_reads_in_light_and_dark(page: Any, theme: str, light: bool) -> None:
    set_theme(page_lab(page), theme, light)
    view = page.locator(".agm-w").first
    assert "non-finite" in view.inner_text()
    origin = view.locator("svg g.node.agm-nonfinite", has_text="⚠ inf")
    assert origin.count() == 1 and "LogBackward0" in (origin.text_content() or "")
    assert view.locator("svg g.node.agm-nonfinite").count() >= 3  # the loss and y * w carry it
    assert page.evaluate(LOW_CONTRAST) == [], theme
    view.screenshot(path=str(artifact_path(f"nonfinite-{'light' if light else 'dark'}.png")))
