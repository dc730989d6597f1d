"""The executed demo as a static HTML page, opened offline in Chromium.

nbconvert draws a widget output as its widget view whenever the notebook holds
that widget's state, and the view's JavaScript comes from a CDN. So the page
that must work offline is exported with the widget state dropped
(``--ClearMetadataPreprocessor.enabled=True``): every report then shows as its
static ``text/html`` — tables and the graph as inline SVG, no JavaScript.
The plain export keeps the widget views and their state (what nbviewer renders
when it can reach the CDN); that is checked on the file, not in a browser.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_util import (
    DEMO,
    WIDGET_STATE,
    WIDGET_VIEW,
    artifact_path,
    chromium_context,
    isolated_env,
    require_chromium,
)

pytestmark = pytest.mark.slow

STATIC_FLAGS = ["--ClearMetadataPreprocessor.enabled=True"]


def export(work: Path, name: str, *flags: str) -> Path:
    """``jupyter nbconvert --to html`` of the committed, executed demo; returns the page."""
    source = work / "demo.ipynb"
    if not source.exists():
        shutil.copyfile(DEMO, source)
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", *flags, "--output", name, str(source)]
    done = subprocess.run(cmd, env=isolated_env(work / "jupyter"), cwd=work, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return work / f"{name}.html"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def static_page(work: Path) -> Path:
    return export(work, "demo-static", *STATIC_FLAGS)


@pytest.fixture(scope="module")
def offline_page(static_page: Path, work: Path) -> Iterator[Any]:
    """The static page in Chromium, network off (only file:// loads) and JavaScript off."""
    require_chromium()
    with chromium_context(work / "profile", offline=True, java_script_enabled=False) as context:

        def route(request_route: Any) -> None:
            url = request_route.request.url
            if url.startswith(("file:", "data:")):
                request_route.continue_()
            else:
                request_route.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.goto(static_page.as_uri(), wait_until="load")
        yield page
        page.screenshot(path=str(artifact_path("export-offline.png")), full_page=True)


def output_of(page: Any, mark: str) -> Any:
    cell = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=mark))
    assert cell.count() == 1, f"expected one cell containing {mark!r}"
    return cell.locator(".jp-OutputArea")


def test_static_export_keeps_only_static_reports(static_page: Path) -> None:
    html = static_page.read_text()
    assert WIDGET_VIEW not in html and WIDGET_STATE not in html
    assert html.count('<div class="agm"') >= 15


@pytest.mark.browser
def test_offline_page_shows_the_graph_with_x_and_y(offline_page: Any) -> None:
    out = output_of(offline_page, "# Auto-differentiate")
    svg = out.locator("svg").first
    svg.wait_for(state="visible")
    names = set(out.locator("svg g.node text").all_text_contents())
    assert {"x", "y", "z"} <= names
    assert {"SubBackward0", "AddBackward0", "MulBackward0"} <= names
    box = svg.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, "the graph is not drawn at a visible size"
    out.screenshot(path=str(artifact_path("export-graph.png")))


@pytest.mark.browser
def test_offline_page_shows_the_diagnostics_in_their_cells(offline_page: Any) -> None:
    expected = {
        "# Assign x to z": "alias-write",
        "arr = x.numpy()": "shared-memory",
        "# Try calling backward()": "backward-no-grad-fn",
    }
    for mark, kind in expected.items():
        text = output_of(offline_page, mark).inner_text()
        assert kind in text, f"{kind} not shown under {mark!r}"
    clone = output_of(offline_page, "z = x.clone()").inner_text()
    assert "alias-write" not in clone
    output_of(offline_page, "# Assign x to z").screenshot(path=str(artifact_path("export-alias.png")))


@pytest.mark.browser
def test_offline_page_shows_gradients(offline_page: Any) -> None:
    text = output_of(offline_page, "dz_dx = x.grad").inner_text()
    assert re.search(r"Gradients", text) and "-1" in text


def test_plain_export_keeps_the_widget_views_and_their_state(work: Path) -> None:
    html = export(work, "demo-widgets").read_text()
    assert WIDGET_STATE in html
    assert html.count(WIDGET_VIEW) >= 15
