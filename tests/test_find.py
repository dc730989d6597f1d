"""The widget on big graphs (issue 22.2): a find box that highlights what matches a name, an op, a module
or a parameter, scrolls to it and unfolds the module a match is folded into (through the kernel, as a
click does); and a diagnostic's code excerpt scrolled to its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_widget
from conftest import report_of, run
from test_modules import SETUP, _screenshot
from test_widget import open_view

from autograd_magic.views.widget import AutogradView

browser_page = test_widget.browser_page  # the chromium page fixture, shared
TOWER = ("model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(8)])\n"
         "loss = model(torch.randn(4, 8)).sum()\nloss.backward()")

# where an element is against the drawing's visible box: "in view" or how it is off
IN_VIEW = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return "missing";
  const scroller = el.closest(".agm-scroll, .agm-source");
  const r = el.getBoundingClientRect(), s = scroller.getBoundingClientRect();
  return r.top >= s.top - 1 && r.bottom <= s.bottom + 1 && r.left >= s.left - 1 && r.right <= s.right + 1
    ? "in view" : `off: ${r.top}-${r.bottom} not in ${s.top}-${s.bottom}`;
}"""


def _shown_widget(ip: Any, monkeypatch: Any, body: str, options: str) -> AutogradView:
    import autograd_magic.magic as magic

    shown: dict[str, Any] = {}
    monkeypatch.setattr(magic, "show_report", lambda report, **kw: shown.update(report=report, **kw))
    run(ip, f"%%autograd {options}\n{body}")
    return AutogradView(shown["report"], shown["refold"], tab="graph")


def test_a_folded_module_lists_what_it_holds_for_the_find_box(ip: Any) -> None:
    report, _ = report_of(ip, SETUP + TOWER, "--depth 1")
    folded = {n.name: n for n in report.graphs[0].nodes if n.kind == "module"}
    assert len(folded) == 8
    assert {"model.0.0.weight", "model.0.0.bias", "AddmmBackward0", "TanhBackward0", "model.0.1"} <= set(
        folded["model.0"].holds)
    assert not any(name.startswith("model.1.") for name in folded["model.0"].holds)
    assert report.to_dict()["graphs"][0]["nodes"][-1]["holds"]  # sent to the widget with the report


@pytest.mark.browser
def test_browser_find_highlights_scrolls_and_unfolds_the_module_holding_the_match(
        ip: Any, monkeypatch: Any, browser_page: Any, tmp_path: Path) -> None:
    view = _shown_widget(ip, monkeypatch, SETUP + TOWER, "--depth 1")
    page = browser_page
    open_view(page, view, tmp_path)
    folded = next(n for n in view.source_report.graphs[0].nodes if n.name == "model.0")
    assert page.evaluate(IN_VIEW, f'g.node[id="n{folded.id}"]') != "in view"  # the input end, below the fold

    page.fill("input.agm-find", "model.0.0.bias")  # a parameter folded into model.0
    assert page.eval_on_selector_all(".agm-found-current", "els => els.map(e => e.id)") == [f"n{folded.id}"]
    assert page.inner_text(".agm-find-status") == "1 of 1 · inside folded model.0: Enter unfolds it"
    assert page.evaluate(IN_VIEW, f'g.node[id="n{folded.id}"]') == "in view"

    page.press("input.agm-find", "Enter")
    assert page.evaluate("window.agmData.fold_request")["module"] == "model.0"
    assert "unfolding model.0" in page.inner_text(".agm-find-status")
    view.fold_request = page.evaluate("window.agmData.fold_request")  # what the kernel does
    page.evaluate("([d, r]) => { window.agmModel.set('drawings', d); window.agmModel.set('report', r); }",
                  [view.drawings, view.report])
    page.wait_for_function("() => !!document.querySelector('.agm-found-current')")
    bias = next(n for n in view.source_report.graphs[0].nodes if n.name == "model.0.0.bias")
    assert page.eval_on_selector_all(".agm-found-current", "els => els.map(e => e.id)") == [f"n{bias.id}"]
    assert page.evaluate(IN_VIEW, f'g.node[id="n{bias.id}"]') == "in view"
    assert page.evaluate("document.activeElement.className") == "agm-find"  # typing goes on in the new box
    assert page.input_value("input.agm-find") == "model.0.0.bias"

    page.fill("input.agm-find", "tanh")  # the unfolded block's op and module, and every block still folded
    assert page.inner_text(".agm-find-status").startswith("1 of 9")  # 7 folded + TanhBackward0 + model.0.1's box
    assert page.eval_on_selector_all(".agm-found, .agm-found-current", "els => els.length") == 9
    page.fill("input.agm-find", "model.0.")  # drawn matches only: Enter and Shift+Enter walk them
    assert page.inner_text(".agm-find-status") == "1 of 4"
    first = page.eval_on_selector(".agm-found-current", "e => e.id")
    page.keyboard.press("Enter")
    assert page.inner_text(".agm-find-status") == "2 of 4"
    second = page.eval_on_selector(".agm-found-current", "e => e.id")
    assert second != first and page.evaluate(IN_VIEW, f'[id="{second}"]') == "in view"
    page.keyboard.press("Shift+Enter")
    assert page.eval_on_selector(".agm-found-current", "e => e.id") == first
    for theme in ("light", "dark"):
        page.evaluate("dark => document.body.setAttribute('data-jp-theme-light', String(!dark))", theme == "dark")
        _screenshot(page, theme, f"find-{theme}.png")
    page.keyboard.press("Escape")
    assert page.eval_on_selector_all(".agm-found, .agm-found-current", "els => els.length") == 0
    assert page.agm_errors == []


@pytest.mark.browser
def test_browser_a_diagnostics_code_excerpt_scrolls_to_its_line(ip: Any, browser_page: Any, tmp_path: Path) -> None:
    filler = "".join(f"a{i} = {i}\n" for i in range(25))
    report, _ = report_of(ip, filler + "x = torch.tensor([1., 2.])\nz = x\nz[0] = 5")
    assert report.diagnostics and report.diagnostics[0].kind == "alias-write"
    page = browser_page
    open_view(page, AutogradView(report), tmp_path)  # opens on the diagnostic, expanded
    assert page.evaluate(IN_VIEW, ".agm-diag-detail .agm-here") == "in view"
    assert "z[0] = 5" in page.inner_text(".agm-diag-detail .agm-here")
    assert page.agm_errors == []
