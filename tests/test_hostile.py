"""Hostile strings: whatever the notebook's code names reaches every view as data.

A shared notebook is opened by someone else; its author controls class, module, parameter and buffer
names, comments, Function attributes and messages. Each payload goes through every name-bearing path
of one cell (run in a real shell) and out through every view: the text view (no control byte), static
HTML and the saved page (no script, no event attribute, no link leaving the page), the saved SVG and
every drawing (parses as XML, links only within it), the JSON (the real names, losslessly), and the
widget's payload (sendable as UTF-8).
"""

from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.dom import minidom

import pytest
from conftest import report_of, run

from autograd_magic.views.escape import dot_string, requote_dot, safe_svg, visible
from autograd_magic.views.graph import find_renderer, render_dot, render_torchviz
from autograd_magic.views.html import render_html
from autograd_magic.views.text import render_text
from autograd_magic.views.widget import AutogradView

needs_renderer = pytest.mark.skipif(find_renderer() is None, reason="no Graphviz renderer (pip install graphviz-pure)")

LINK_TABLE = '<<TABLE HREF="javascript:alert(document.domain)" BGCOLOR="yellow"><TR><TD>click me'
PAYLOADS = {
    "terminal": "x\x1b]0;TITLE\x07\x1b[2J\r\x9b31m",
    "entities": "&#1;&#x1f;&#0;&lt;svg onload=alert(1)&gt;&amp;&nbsp;&bogus;",
    "table": LINK_TABLE,
    "script": '"</script><script>alert(1)</script><img src=x onerror=alert(1)>',
    "dot": '\\" ] ; n1 -> n2 [URL="javascript:alert(1)" label=<<b>x</b>>] ; //',
    "xml": "\ufffe\uffff\x0b\x0c\x00\ue000",
    "surrogate": "s\ud800t\udfff",
    "bidi": "a\u202eb\u2066c\u200f",
}
# C0 but tab/newline, DEL, C1, bidi controls, XML-forbidden, lone surrogates: never printed or drawn raw
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                    "\ud800-\udfff\ufffe\uffff]")
CHAR_REF = re.compile(r"&#(x[0-9a-fA-F]+|[0-9]+);")
LINK_ATTRS = {"href", "xlink:href", "src", "action", "formaction", "data", "poster"}
BAD_TAGS = {"script", "iframe", "object", "embed", "foreignobject", "img", "image", "use", "animate", "set",
            "handler", "form", "meta", "base", "link"}

# every name-bearing path in one cell: Function class and saved attribute (torchviz), module class,
# module, parameter and buffer names, a comment and a string in a code line, a training loop (the
# Training view's parameter names), a warning, and the exception the cell ends with
CELL = '''import torch, warnings
P = {payload!r}
N = P.replace(".", "_")
C = P.replace("\\x00", "0").encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # what type() takes
def _fwd(ctx, x):
    ctx._saved_z = P + "</TD></TR></TABLE>>"
    return x * 2
def _bwd(ctx, g):
    return g * 2
Fn = type(C, (torch.autograd.Function,), {{"forward": staticmethod(_fwd), "backward": staticmethod(_bwd)}})
def _forward(self, x):
    return getattr(self, N)(x) * getattr(self, "p" + N) + getattr(self, "b" + N)
Block = type("B" + C, (torch.nn.Module,), {{"forward": _forward}})
block = Block()
block.add_module(N, torch.nn.Linear(2, 2))
block.register_parameter("p" + N, torch.nn.Parameter(torch.ones(2)))
block.register_buffer("b" + N, torch.zeros(2))
model = torch.nn.Sequential()
model.add_module(N, block)
x = torch.ones(1, 2, requires_grad=True)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    opt.zero_grad()
    y = Fn.apply(model(x))  # {comment}
    loss = (y * len("{comment}")).sum()
    loss.backward()
    opt.step()
warnings.warn(P)
raise ValueError(P)
'''


def cell_for(payload: str) -> str:
    # a source line cannot hold NUL or a lone surrogate, and a comment ends at a line break
    comment = re.sub("[\x00\r\n\"\\\\\ud800-\udfff]", "?", payload)
    return CELL.format(payload=payload, comment=comment)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_safe_page(page: str) -> None:
    """Nothing in the page runs, loads or leaves it; no character a parser or a terminal would act on."""
    assert not UNSAFE.search(page)
    for ref in CHAR_REF.findall(page):
        code = int(ref[1:], 16) if ref.startswith("x") else int(ref)
        assert not UNSAFE.match(chr(code)), ref
    parser = _Tags()
    parser.feed(page)
    for tag, attrs in parser.tags:
        assert tag not in BAD_TAGS or (tag, attrs) == ("meta", [("charset", "utf-8")]), tag
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name)
            if name in LINK_ATTRS:
                assert (value or "").startswith("#"), (tag, name, value)
            assert "url(" not in (value or "").replace("url(#", ""), (tag, name, value)
    for svg in re.findall(r"<svg\b.*?</svg>", page, re.DOTALL):
        assert_safe_svg(svg)


def assert_safe_svg(svg: str) -> ET.Element:
    """Well-formed XML (as a saved .svg must be) with nothing in it that runs or links out."""
    minidom.parseString(svg.encode("utf-8"))
    root = ET.fromstring(svg)
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1].lower()
        assert tag not in BAD_TAGS, tag
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            assert not local.startswith("on"), (tag, name)
            if local in LINK_ATTRS:
                assert value.startswith("#"), (tag, name, value)
    return root


def drawn_text(svg: str) -> str:
    """The text drawn in the boxes (not the tooltips), one line each."""
    lines = ("".join(text.itertext()) for text in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text"))
    return "\n".join(line.strip() for line in lines)


@pytest.fixture(scope="module")
def hostile_reports(shell: Any) -> dict[str, Any]:
    """Each payload's cell recorded once, drawn plain and with its modules folded (--depth 0)."""
    reports = {}
    # the cells' warnings stay here: pytest would carry their payloads (lone surrogates) to its summary, which
    # pytest-xdist cannot send from a worker as UTF-8
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for key, payload in PAYLOADS.items():
            shell.run_cell("import torch", store_history=False)
            for options in ("--torchviz", "--depth 0"):
                report, cell = report_of(shell, cell_for(payload), options)
                assert report is not None and report.error is not None, cell.stderr
                assert report.error.type == "ValueError"
                reports[f"{key} {options}"] = report
    return reports


@needs_renderer
def test_every_view_of_every_hostile_payload_is_data(hostile_reports: dict[str, Any], tmp_path: Path) -> None:
    for key, report in hostile_reports.items():
        text = render_text(report)
        assert not UNSAFE.search(text), key
        assert_safe_page(render_html(report))
        page = report.save(tmp_path / "r.html").read_text(encoding="utf-8")
        assert_safe_page(page)
        assert_safe_svg(report.save(tmp_path / "r.svg").read_text(encoding="utf-8"))
        data = json.loads(report.save(tmp_path / "r.json").read_text(encoding="utf-8"))
        assert data == json.loads(report.to_json())  # the real names, as data
        if "torchviz" in key:
            assert report.torchviz_dot and report.torchviz_dot.startswith("digraph")
            drawn = render_torchviz(report.torchviz_dot)
            assert drawn.svg is not None, drawn.hint
            assert_safe_svg(drawn.svg)
            assert "torchviz's drawing" in page


@needs_renderer
def test_names_reach_the_drawings_as_written(hostile_reports: dict[str, Any]) -> None:
    for key, payload in PAYLOADS.items():
        report = hostile_reports[f"{key} --torchviz"]
        shown = visible(payload.replace("\x00", "0").encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        assert report.training is not None and any(shown in line for line in render_text(report).splitlines())
        torchviz = drawn_text(render_torchviz(report.torchviz_dot).svg or "")
        assert shown.replace('\\"', '"') + "Backward" in torchviz, key  # graphviz.quote takes \" as escaped
        ours = drawn_text(re.findall(r"<svg\b.*?</svg>", render_html(report), re.DOTALL)[0])
        # the module's cluster: "name (class)" clipped to one line; the block is named `block` or, as often,
        # `model.<payload>`, whose length can leave none of the class
        named = visible(payload.replace(".", "_"))  # a module name keeps what a class name cannot (NUL, surrogates)
        assert f"block (B{shown}"[:24] in ours or f"model.{named}"[:24] in ours, key


@needs_renderer
def test_the_widget_payload_is_sendable_and_its_drawings_safe(hostile_reports: dict[str, Any]) -> None:
    for key, report in hostile_reports.items():
        view = AutogradView(report)
        for part in (view.report, view.drawings):
            json.dumps(part, ensure_ascii=False, allow_nan=False).encode("utf-8")  # Jupyter's transport
        for drawing in [*view.drawings, view.report.get("torchviz") or {}]:
            if drawing.get("svg"):
                assert_safe_svg(drawing["svg"])
        data, _ = view._repr_mimebundle_()
        assert not UNSAFE.search(data["text/plain"]), key
        assert_safe_page(data["text/html"])
        if key == "table --torchviz":  # the torchviz tab: the class name as text, no yellow table
            torchviz = view.report["torchviz"]["svg"]
            assert LINK_TABLE in drawn_text(torchviz) and 'fill="yellow"' not in torchviz


@needs_renderer
def test_the_reproduction_draws_nothing_clickable_and_the_class_name_as_text(ip: Any, tmp_path: Path) -> None:
    """The issue's cell, through --save, report.save and --view html: a yellow table that ran a script."""
    saved = tmp_path / "quoted dir" / "r.html"
    saved.parent.mkdir()
    body = cell_for("").split("P = ''", 1)[0]  # the imports
    cell = run(ip, f'%%autograd --torchviz --view html -o rep --save "{saved}"\n{body}' + REPRODUCTION)
    assert cell.error is None, cell.stderr
    report = ip.user_ns["rep"]
    pages = [saved.read_text(encoding="utf-8"), report.save(tmp_path / "r.html").read_text(encoding="utf-8"),
             *(b["text/html"] for b in cell.bundles if "text/html" in b)]
    assert len(pages) == 3
    for page in pages:
        assert_safe_page(page)
        assert "<a " not in page.split("torchviz's drawing", 1)[1].replace('<a xlink:title', "")
        svg = re.findall(r"<svg\b.*?</svg>", page.split("torchviz's drawing", 1)[1], re.DOTALL)[0]
        assert LINK_TABLE + "Backward" in drawn_text(svg)
        assert 'fill="yellow"' not in svg


REPRODUCTION = '''
def _fwd(ctx, x):
    ctx._saved_z = "</TD></TR></TABLE>>"
    return x * 2
def _bwd(ctx, g):
    return g * 2
Link = type('<<TABLE HREF="javascript:alert(document.domain)" BGCOLOR="yellow"><TR><TD>click me',
            (torch.autograd.Function,), {"forward": staticmethod(_fwd), "backward": staticmethod(_bwd)})
x = torch.ones(2, requires_grad=True)
Link.apply(x).sum().backward()
'''


@needs_renderer
def test_a_saved_svg_parses_whatever_the_module_and_comment_hold(ip: Any, tmp_path: Path) -> None:
    """Road 2: control characters in module and module-class names, &#1; in a comment, U+FFFE in a class."""
    path = tmp_path / "my graph.svg"
    cell = run(ip, f"""%%autograd -q -o rep --save '{path}'
import torch
m = torch.nn.Sequential()
m.add_module("x\\x01\\x1b[2J", type("C\\x02\\ufffe", (torch.nn.Linear,), {{}})(2, 2))
loss = m(torch.ones(1, 2)).sum()  # &#1; &#x0; &lt;b&gt;
loss.backward()
""")
    assert cell.error is None and "could not save" not in cell.stdout, cell.stdout
    svg = path.read_text(encoding="utf-8")
    text = drawn_text(svg)
    assert_safe_svg(svg)
    assert "x\\x01\\x1b[2J (C\\x02\\ufffe)" in text  # the cluster, as the text view writes it
    tips = [v for e in ET.fromstring(svg).iter() for v in [e.text or "", *e.attrib.values()]]
    if any("&#1;" in node.code for node in ip.user_ns["rep"].graphs[0].nodes):  # torch 2.4 records no line here
        assert any("&#1; &#x0; &lt;b&gt;" in tip for tip in tips)  # the comment in the tooltip, not decoded


def test_the_text_view_prints_no_terminal_control(ip: Any) -> None:
    """Road 3: module, parameter, buffer and Function class names retitled and cleared the terminal."""
    cell = run(ip, """%%autograd --text
m = torch.nn.Module()
m.add_module("x\\x1b]0;TITLE\\x07\\x1b[2J", torch.nn.Linear(2, 2))
m.register_parameter("p\\x1b[31m", torch.nn.Parameter(torch.ones(2)))
m.register_buffer("b\\x9b2J", torch.ones(2))
F = type("F\\x1b[2J", (torch.autograd.Function,), {"forward": staticmethod(lambda ctx, x: x * 2),
         "backward": staticmethod(lambda ctx, g: g * 2)})
for _ in range(2):
    loss = F.apply(getattr(m, "x\\x1b]0;TITLE\\x07\\x1b[2J")(torch.ones(1, 2)) * getattr(m, "p\\x1b[31m")).sum()
    loss.backward()
""")
    assert cell.error is None, cell.stderr
    assert not UNSAFE.search(cell.stdout)
    assert "\\x1b]0;TITLE\\x07\\x1b[2J" in cell.stdout and "F\\x1b[2JBackward" in cell.stdout
    assert "p\\x1b[31m" in cell.stdout


def test_save_strips_shell_quotes_from_the_path(ip: Any, tmp_path: Path) -> None:
    for quoted, name in ((f'"{tmp_path}/a b.json"', "a b.json"), (f"'{tmp_path}/c.json'", "c.json"),
                         (f'--save="{tmp_path}/d e.json"', "d e.json")):
        option = quoted if quoted.startswith("--") else f"--save {quoted}"
        cell = run(ip, f"%%autograd -q {option}\nx = torch.ones(1, requires_grad=True)\n(x * 2).sum().backward()")
        assert cell.error is None and cell.stdout == "", cell.stdout
        assert (tmp_path / name).is_file(), name
    run(ip, "y = torch.ones(1)")
    cell = run(ip, f'%autograd --save "{tmp_path}/f g.json" z = y * 2')
    assert cell.error is None and (tmp_path / "f g.json").is_file(), cell.stdout
    assert ip.user_ns["z"].tolist() == [2.0]


@needs_renderer
def test_a_class_named_like_an_entity_is_drawn_as_the_tables_show_it(ip: Any) -> None:
    report, cell = report_of(ip, """Sq = type("&lt;svg onload=alert(1)&gt;" + "x" * 80, (torch.nn.Linear,), {})
m = Sq(2, 2)
loss = m(torch.ones(1, 2)).sum()
loss.backward()""", "--depth 0")
    assert cell.error is None, cell.stderr
    page = render_html(report)
    assert_safe_page(page)
    svg = re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)[0]
    shown = drawn_text(svg)
    assert "&lt;svg onload" in shown and "<svg onload" not in shown
    assert "x" * 80 not in shown  # clipped like every other label


def test_escaping_rules_hold_for_any_character() -> None:
    """The rules themselves, on every code point a name can hold below U+3000 and the specials."""
    every = "".join(chr(c) for c in [*range(0x3000), 0xD800, 0xDFFF, 0xE000, 0xFFFE, 0xFFFF, 0x10FFFF])
    assert not UNSAFE.search(visible(every))
    quoted = dot_string(every)
    assert quoted.startswith('"') and quoted.endswith('"') and "&" not in quoted
    assert re.fullmatch(r'"(?:[^"\\]|\\.)*"', quoted, re.DOTALL)  # one DOT string, closed where it should be
    assert requote_dot(f"digraph {{ a [label=<{every}>] }}").count("label=") == 1
    assert safe_svg('<svg><a xlink:href="javascript:x" href="http://e" target="_top" onclick="x">'
                    '<script>alert(1)</script><foreignObject><p>x</p></foreignObject>'
                    '<text style="background:url(http://e)" fill="url(#g)">&#1;&bogus;&amp;</text></a></svg>') == (
        '<svg><a><text fill="url(#g)">&#xfffd;&amp;bogus;&amp;</text></a></svg>'.replace("&#xfffd;", "\ufffd"))


@needs_renderer
def test_links_graphviz_would_draw_are_dropped_even_from_raw_dot() -> None:
    """DOT that reached Graphviz some other way (URL, href, an HTML table) still draws nothing clickable."""
    drawn = render_dot('digraph { a [URL="javascript:alert(1)", target="_top", tooltip="t"]; '
                       'b [label=<<TABLE HREF="http://e.example"><TR><TD HREF="javascript:x">c</TD></TR></TABLE>>]; '
                       'c [href="#n1"] }')
    assert drawn.svg is not None
    root = assert_safe_svg(drawn.svg)
    links = [v for e in root.iter() for k, v in e.attrib.items() if k.endswith("href")]
    assert links == ["#n1"]


@pytest.mark.browser
@needs_renderer
def test_in_chromium_the_reproduction_has_no_link_and_its_saved_svg_renders(ip: Any, tmp_path: Path) -> None:
    """The saved page and .svg of the issue's cell, opened from disk in Chromium as a recipient would."""
    from e2e_util import chromium_context

    cell = run(ip, "%%autograd --torchviz -q -o rep\nimport torch\n" + REPRODUCTION)
    assert cell.error is None, cell.stderr
    report = ip.user_ns["rep"]
    page, svg = report.save(tmp_path / "r.html"), report.save(tmp_path / "r.svg")
    with chromium_context(tmp_path / "profile", offline=True) as context:
        tab = context.new_page()
        dialogs: list[str] = []
        tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        tab.goto(page.as_uri())
        tab.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        links = tab.evaluate("""[...document.querySelectorAll('a')].map((a) =>
            a.getAttribute('href') || a.getAttributeNS('http://www.w3.org/1999/xlink', 'href') || '')""")
        assert all(link == "" or link.startswith("#") for link in links), links
        label = tab.locator("svg text", has_text="click me").first
        assert LINK_TABLE in label.text_content()
        label.click()
        tab.wait_for_timeout(300)
        assert dialogs == [] and tab.url == page.as_uri()
        tab.goto(svg.as_uri())
        assert tab.evaluate("document.documentElement.localName") == "svg"
        assert tab.evaluate("document.getElementsByTagName('parsererror').length") == 0
