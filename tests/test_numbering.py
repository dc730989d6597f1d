"""One line numbering: the API, JSON, text, HTML, widget, drawings and IPython's traceback agree.

The report holds the cell body's numbering from capture on (line 1 is the first line under
``%%autograd``, as IPython's tracebacks count); no view renumbers anything.
"""

from __future__ import annotations

import html
import json
import re
import traceback
from pathlib import Path
from typing import Any

from conftest import run

from autograd_magic.views.graph import facts_of, to_dot
from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text
from autograd_magic.views.training import training_text
from autograd_magic.views.widget import payload

EARLIER = "%%autograd -q\na = torch.ones(2, requires_grad=True)\nbase = torch.zeros(3)\nview = base[1:]\n"
BODY = """scale = 3.0
b = a * 2
b = b * scale
c = b
c[0] = 5
view.add_(1)
for i in range(2):
    loss = (a * (i + 1)).sum()
    loss.backward()
print(a.grad)
b.backward()
"""


def _line(text: str, nth: int = 0) -> int:
    """The body line (first line = 1) of the nth line holding ``text``."""
    return [i for i, line in enumerate(BODY.splitlines(), 1) if text in line][nth]


def _page_text(page: str) -> str:
    inline = re.sub(r"</?code>", "", page)  # a message's `code` spans
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def _words(message: str) -> str:
    return " ".join(message.replace("`", "").split())


def test_every_view_gives_the_same_line_for_the_same_thing(ip: Any, tmp_path: Path) -> None:
    run(ip, "import torch")
    earlier = run(ip, EARLIER)
    assert earlier.error is None
    saved = tmp_path / "report.json"
    cell = run(ip, f"%%autograd -q -o rep --save {saved}\n{BODY}")
    report = ip.user_ns["rep"]
    assert report.first_line == 2  # the editor line of line 1, to map back

    # the API: each finding at the line the traceback would name
    by_kind = {d.kind: d for d in report.diagnostics if d.kind != "alias-write" or "c[0]" in d.code}
    assert by_kind["alias-write"].line == _line("c[0] = 5")
    assert f"`c = b` at line {_line('c = b')}" in by_kind["alias-write"].message
    earlier_view = next(d for d in report.diagnostics if d.code == "view.add_(1)")
    assert earlier_view.line == _line("view.add_(1)")
    assert "`view = base[1:]` at line 3 of cell In [" in earlier_view.message  # that cell's own body line
    assert by_kind["grad-summed"].line == _line("print(a.grad)")
    assert f"at line {_line('loss.backward()')} ran 2 times" in by_kind["grad-summed"].message
    assert by_kind["backward-non-scalar"].line == _line("b.backward()")

    # the traceback beside the report
    assert isinstance(cell.error, RuntimeError)
    frames = traceback.extract_tb(cell.error.__traceback__)
    assert report.error.line == next(f.lineno for f in frames if f.line == "b.backward()") == _line("b.backward()")

    # JSON: to_dict and --save give the API's numbers and messages, unchanged
    data = report.to_dict()
    assert json.loads(saved.read_text()) == json.loads(report.to_json())
    assert [(d["line"], d["message"]) for d in data["diagnostics"]] == [(d.line, d.message) for d in report.diagnostics]
    assert data["error"]["line"] == report.error.line
    assert data["tensors"]["c"]["line"] == _line("c = b")

    # the widget's payload is the same JSON
    sent = payload(report)
    assert sent["diagnostics"] == data["diagnostics"] and sent["error"] == data["error"]
    assert sent["first_line"] == 2 and sent["tensors"] == data["tensors"]
    lines = [[(n["name"], n["line"]) for n in g["nodes"]] for g in data["graphs"]]
    assert [[(n["name"], n["line"]) for n in g["nodes"]] for g in sent["graphs"]] == lines
    assert [s["line"] for s in sent["backward_steps"]] == [s["line"] for s in data["backward_steps"]]

    # text and HTML show each diagnostic at its line with its message as the API has it
    text, page = render_text(report), _page_text(render_html(report))
    for d in report.diagnostics:
        assert f"{d.severity.upper()} [{d.kind}] line {d.line}:" in text
        assert all(line in text for line in d.message.splitlines())
        assert _words(d.message.splitlines()[0]) in page
    assert f"raised RuntimeError at line {report.error.line}" in text
    assert f"raised RuntimeError at line {report.error.line}" in page

    # the rebound name, its node in the drawing, the replay, the training panel and why()
    rebound = next(g for g in report.graphs if any(n.name == f"b (line {_line('b = a * 2')})" for n in g.nodes))
    node = next(n for n in rebound.nodes if n.name == f"b (line {_line('b = a * 2')})")
    assert node.line == _line("b = a * 2") and f"line {node.line}: " in to_dot(rebound, facts_of(report))
    backward = _line("loss.backward()")
    assert [r.line for r in report.backward_steps] == [backward, backward]
    assert f"loss.backward() at line {backward}" in text
    assert report.training.line == backward
    assert any(f"(backward at line {backward})" in line for line in training_text(report.training))
    assert f"line {backward} ×2" in report.why("a")
