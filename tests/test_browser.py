"""demo.ipynb in JupyterLab, in headless Chromium: Run All, then look at and click the views.

One JupyterLab server and one browser for the module (starting them takes
~10 s): the server on 127.0.0.1 at a free port with a random token, HOME and
the Jupyter/IPython dirs in a temp dir, the kernel this venv's python; the
notebook is a copy of the demo with its outputs cleared, so everything checked
here was rendered live. Screenshots go to artifacts/ (AGM_UPDATE_SCREENSHOT=1
also refreshes docs/screenshot.png for the README).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
from e2e_util import (
    DEMO,
    ROOT,
    artifact_path,
    chromium_context,
    code_cells,
    jupyter_lab,
    require_chromium,
    trust,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KERNEL_READY = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

RUN_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter((c) => c.model.type === 'code');
  return {status: panel.sessionContext.session.kernel.status,
          counts: cells.map((c) => c.model.executionCount)};
}"""

# runs code in the notebook's kernel and returns what it printed (how Python's view of the widget is read)
KERNEL_PRINT = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  let out = '';
  const future = kernel.requestExecute({code, store_history: false});
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += msg.content.ename + ': ' + msg.content.evalue;
  };
  await future.done;
  return out;
}"""

# the AutogradView displayed by the cell whose source contains MARK, as Python sees it
SELECTION = """
import ipywidgets.widgets.widget as _agm_w
from autograd_magic.views.widget import AutogradView as _AgmView
_agm_v = [v for v in list(_agm_w._instances.values())
          if isinstance(v, _AgmView) and {mark!r} in v.source_report.source][-1]
_agm_n = _agm_v.selected_node
print(_agm_v.tab, _agm_v.selected, _agm_n.name if _agm_n else None, _agm_n.label if _agm_n else None)
"""

TABS = ["Graph", "Variables", "Gradients", "Diagnostics", "Timeline"]
BACKWARD_CELL = "# Auto-differentiate"
ALIAS_CELL = "# Assign x to z"
CLOSING_CELL = "# Try calling backward()"


@dataclass
class Lab:
    page: Any
    server: Any
    console_errors: list[str] = field(default_factory=list)
    run_seconds: float = 0.0

    def cell(self, mark: str) -> Any:
        cell = self.page.locator(".jp-CodeCell").filter(has=self.page.locator(".jp-InputArea", has_text=mark))
        assert cell.count() == 1, f"expected one cell containing {mark!r}"
        cell.scroll_into_view_if_needed()
        return cell

    def view(self, mark: str) -> Any:
        return self.cell(mark).locator(".agm-w")

    @property
    def root(self) -> Path:
        return Path(self.server.root)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.server.env)

    def url(self, path: str) -> str:
        return str(self.server.url(path))

    def python(self, code: str) -> str:
        return str(self.page.evaluate(KERNEL_PRINT, code)).strip()

    def python_view_state(self, mark: str) -> str:
        return self.python(SELECTION.format(mark=mark))


def report_cells() -> list[Any]:
    return [c for c in code_cells(nbformat.read(DEMO, as_version=4)) if c.source.startswith("%%autograd")]


def cleared_copy(target: Path) -> Path:
    """The demo without outputs or widget state: whatever the test sees, the live run drew."""
    nb = nbformat.read(DEMO, as_version=4)
    for cell in code_cells(nb):
        cell.outputs = []
        cell.execution_count = None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, target / "demo.ipynb")
    return target / "demo.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_chromium()
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    cleared_copy(root)
    tall = {"width": 1400, "height": 1800}  # element screenshots are cut at the notebook panel's edge
    with jupyter_lab(root, base / "jupyter") as server, chromium_context(base / "profile", viewport=tall) as context:
        page = context.new_page()
        page.set_default_timeout(30_000)
        state = Lab(page, server)
        page.on("console", lambda msg: state.console_errors.append(msg.text) if msg.type == "error" else None)
        try:
            open_and_run_all(state, server.url("lab/tree/demo.ipynb?reset"))
            yield state
        finally:
            page.screenshot(path=str(artifact_path("lab-final.png")), full_page=True)
            shutil.copyfile(server.log, artifact_path("jupyterlab.log"))
            artifact_path("console-errors.txt").write_text("\n".join(state.console_errors))


def open_and_run_all(lab: Lab, url: str) -> None:
    page = lab.page
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # the status bar says Idle before any kernel is connected: wait for the kernel itself first
    page.wait_for_function(KERNEL_READY, timeout=90_000)
    page.get_by_text("| Idle").first.wait_for()
    page.screenshot(path=str(artifact_path("lab-opened.png")))
    started = time.monotonic()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    wait_for_run_all(lab, timeout=240)
    lab.run_seconds = time.monotonic() - started
    page.get_by_text("| Idle").first.wait_for()


def wait_for_run_all(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = lab.page.evaluate(RUN_STATE)
        if state["status"] == "idle" and all(state["counts"]):
            return
        time.sleep(0.5)
    lab.page.screenshot(path=str(artifact_path("lab-run-all-timeout.png")), full_page=True)
    missing = [i for i, count in enumerate(state.get("counts", [])) if not count]
    pytest.fail(f"Run All did not finish in {timeout}s: kernel {state.get('status')}, code cells not run: {missing}")


# --- the run ------------------------------------------------------------------------------------


def test_run_all_executes_every_cell_past_the_tagged_failures(lab: Lab) -> None:
    counts = lab.page.evaluate(RUN_STATE)["counts"]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert lab.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() >= 3
    assert lab.run_seconds < 120


def test_every_autograd_cell_rendered_the_widget(lab: Lab) -> None:
    expected = len(report_cells())
    lab.page.wait_for_function(f"() => document.querySelectorAll('.agm-w').length >= {expected}")
    assert lab.page.locator(".agm-w").count() == expected
    widget_errors = [e for e in lab.console_errors if "widget" in e.lower() or "agm" in e.lower()]
    assert not widget_errors


def test_graph_svg_names_the_leaves_x_and_y(lab: Lab) -> None:
    view = lab.view(BACKWARD_CELL)
    assert [t.text_content() for t in view.get_by_role("tab").all()] == TABS
    svg = view.locator("svg").first
    svg.wait_for()
    names = view.locator("svg g.node text").all_text_contents()
    assert {"x", "y", "z"} <= set(names)
    assert {"SubBackward0", "AddBackward0", "MulBackward0", "AccumulateGrad"} <= set(names)
    lab.cell(BACKWARD_CELL).screenshot(path=str(artifact_path("graph.png")))


def test_each_panel_shows_its_content(lab: Lab) -> None:
    view = lab.view(BACKWARD_CELL)
    expected = {
        "Variables": ["requires_grad", "SubBackward0"],
        "Gradients": ["[-1]", "leaf .grad"],
        "Diagnostics": ["No diagnostics"],
        "Timeline": ["z.backward()"],
        "Graph": ["Graph 1: root z"],
    }
    for name, fragments in expected.items():
        view.get_by_role("tab", name=name).click()
        panel = view.get_by_role("tabpanel", name=name)
        panel.wait_for(state="visible")
        text = panel.inner_text()
        for fragment in fragments:
            assert fragment in text, f"{name}: {fragment!r} not in {text[:300]!r}"
        assert view.get_by_role("tab", name=name).get_attribute("aria-selected") == "true"
        lab.cell(BACKWARD_CELL).screenshot(path=str(artifact_path(f"panel-{name.lower()}.png")))
    assert lab.python_view_state("z.backward()").split()[0] == "graph", "the tab choice did not reach Python"


def test_clicking_a_graph_node_selects_it_in_python(lab: Lab) -> None:
    view = lab.view(BACKWARD_CELL)
    view.get_by_role("tab", name="Graph").click()
    node = view.locator("svg g.node").filter(has=lab.page.locator("text", has_text="x")).filter(
        has=lab.page.locator("text", has_text="AccumulateGrad"))
    assert node.count() == 1
    node.click()
    assert "x" in view.locator(".agm-details").inner_text()
    expected_id = node.get_attribute("id").removeprefix("n")
    deadline = time.monotonic() + 15
    while (state := lab.python_view_state("z.backward()")) != f"graph {expected_id} x AccumulateGrad":
        assert time.monotonic() < deadline, f"Python sees {state!r}"
        time.sleep(0.3)
    lab.cell(BACKWARD_CELL).screenshot(path=str(artifact_path("node-selected.png")))


def test_alias_cell_shows_the_alias_diagnostic(lab: Lab) -> None:
    view = lab.view(ALIAS_CELL)
    assert "1 warning" in view.locator(".agm-summary").inner_text()
    view.get_by_role("tab", name="Diagnostics").click()
    item = view.locator(".agm-diag")
    assert item.count() == 1 and "alias-write" in item.inner_text()
    item.click()
    message = view.locator(".agm-message").inner_text()
    assert "`x`" in message and "`z`" in message and "clone()" in message
    lab.cell(ALIAS_CELL).screenshot(path=str(artifact_path("alias-diagnostic.png")))


def test_closing_cell_explains_the_failed_backward(lab: Lab) -> None:
    view = lab.view(CLOSING_CELL)
    view.get_by_role("tab", name="Diagnostics").click()
    kinds = view.locator(".agm-diag").all_inner_texts()
    assert any("backward-no-grad-fn" in k for k in kinds)
    view.locator(".agm-diag", has_text="backward-no-grad-fn").click()
    assert "no grad_fn" in view.locator(".agm-message").inner_text()
    assert "RuntimeError" in lab.cell(CLOSING_CELL).inner_text()
    lab.cell(CLOSING_CELL).screenshot(path=str(artifact_path("closing-diagnostic.png")))


def test_readme_screenshot(lab: Lab) -> None:
    """Compose graph + gradients + diagnostics screenshots into one picture for the README."""
    parts = [artifact_path(name) for name in ("node-selected.png", "alias-diagnostic.png")]
    if not all(p.exists() for p in parts):
        pytest.skip("the screenshots it is made of were not taken (an earlier test failed)")
    page = lab.page.context.new_page()
    try:
        page.set_viewport_size({"width": 1080, "height": 400})
        images = "".join(f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
                         'style="display:block;width:1060px;margin:0 0 10px">' for p in parts)
        page.set_content(f'<body style="margin:10px;background:#fff">{images}</body>')
        page.wait_for_function("() => [...document.images].every((i) => i.complete && i.naturalWidth > 0)")
        shot = artifact_path("screenshot.png")
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    assert shot.stat().st_size > 20_000
    if os.environ.get("AGM_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "screenshot.png")


def test_saved_demo_opened_as_demo_sh_does_shows_the_widgets_without_running(lab: Lab) -> None:
    """The committed notebook, trusted like scripts/demo.sh does: views come back from the saved widget state."""
    root = lab.root
    shutil.copyfile(DEMO, root / "saved.ipynb")
    trust(root / "saved.ipynb", lab.env)
    page = lab.page.context.new_page()
    try:
        page.goto(lab.url("lab/tree/saved.ipynb"))
        cell = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=BACKWARD_CELL))
        cell.locator(".agm-w svg g.node").first.wait_for(timeout=60_000)
        assert {"x", "y", "z"} <= set(cell.locator(".agm-w svg g.node text").all_text_contents())
        expected = len(report_cells())
        page.wait_for_function(f"() => document.querySelectorAll('.agm-w').length >= {expected}")
        assert page.locator(".jp-InputPrompt", has_text="[*]").count() == 0, "nothing should run"
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=str(artifact_path("saved-demo-restored.png")))
    finally:
        page.close()
