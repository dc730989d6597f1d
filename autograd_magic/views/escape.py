"""One escaping rule per output; every string the notebook's code controls reaches a view through one.

Names, reprs, comments and messages are data written by whoever wrote the notebook, and a notebook is
opened by others. Each output has its own rule, applied at one place:

- ``visible``: every rule starts here. Control characters (C0 but tab and newline, DEL, C1), bidi
  overrides, the XML-forbidden U+FFFE/U+FFFF and lone surrogates become visible escapes (``\\x1b``),
  so a name reads the same in the terminal, the tables and the drawing, and none can retitle a
  terminal, reorder a line or break an XML parser.
- ``terminal_text``: the text view, printed as is.
- ``html_text``: the static HTML view (``html.escape`` after `visible`).
- ``dot_string``: a quoted DOT string. ``&`` goes to Graphviz as a private-use stand-in, because
  Graphviz decodes entities in labels (``&#1;`` would become a control byte, ``&lt;`` a ``<``) and
  some versions copy an entity-looking ``&`` into the SVG unescaped; `safe_svg` turns the stand-in
  back into ``&amp;``.
- ``safe_svg``: every SVG Graphviz returns is untrusted (torchviz's DOT is the notebook's own): it is
  parsed as XML and written again with only drawing elements, no event attributes, no styles or
  paint that load from elsewhere, and links only within the document.
- ``requote_dot``: torchviz's DOT, re-quoted with `dot_string`: a label written ``<...>`` (which
  Graphviz would read as an HTML-like table, links included) becomes plain text.
"""

from __future__ import annotations

import html
import re
from xml.parsers import expat

AMP = "\ue000"  # stands for a user's "&" inside DOT; see dot_string
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff\ue000\ufffe\uffff]")
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_REFERENCE = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_BARE_AMP = re.compile(r"&(?!#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9]*;)")
_XML_ENTITIES = frozenset({"amp;", "lt;", "gt;", "quot;", "apos;"})
_SVG_ELEMENTS = frozenset({
    "svg", "g", "title", "desc", "a", "path", "polygon", "polyline", "ellipse", "circle", "rect", "line",
    "text", "tspan", "defs", "linearGradient", "radialGradient", "stop",
})
_ELEMENT = re.compile(r"<([A-Za-z][^\s/>]*)")
# searched in the lowered text; each begins with a literal or a space, so a big drawing is scanned fast
_SUSPECT = re.compile(r"\s(?:on[a-z]*\s*=|target\s*=|style\s*=|[a-z]*:(?:show|actuate)\s*=)")
_LINK_OUT = re.compile(r"href\s*=\s*[\"'](?!#)")
_URL_OUT = re.compile(r"url\s*\((?!\s*[\"']?#)")
_LINK = re.compile(r"^(?:xlink:)?href$", re.IGNORECASE)
_REMOTE_PAINT = re.compile(r"url\s*\(\s*(?!['\"]?#)", re.IGNORECASE)
# DOT tokens that hold text: quoted strings, <HTML-like> strings, comments; everything else passes
_DOT_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|<|//[^\n]*|/\*.*?\*/|^#[^\n]*', re.DOTALL | re.MULTILINE)
_ESC_STRING = re.compile(r"\\(.)", re.DOTALL)


def visible(text: str) -> str:
    """``text`` with every control, bidi-override or XML-forbidden character as a visible escape."""
    return _UNSAFE.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """The text view's rule: nothing a terminal would act on, newlines and tabs kept."""
    return visible(text)


def html_text(value: object) -> str:
    """The HTML views' rule, for element text and double-quoted attribute values alike."""
    return html.escape(visible(str(value)), quote=True)


def dot_string(text: str) -> str:
    """``text`` as a DOT double-quoted string that Graphviz shows as written (newlines as line breaks)."""
    text = visible(text).replace("&", AMP).replace("\r", "")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def readable_dot(dot: str) -> str:
    """DOT made by `dot_string`, to show as source when there is no drawing: ``&`` as written."""
    return dot.replace(AMP, "&")


def requote_dot(source: str) -> str:
    """DOT from elsewhere (torchviz) with every string re-quoted by `dot_string` and comments dropped."""
    out: list[str] = []
    done = 0
    for token in _DOT_TOKEN.finditer(source):
        if token.start() < done:
            continue  # inside an <HTML-like> string already taken whole
        out.append(source[done:token.start()])
        text = token.group()
        if text == "<":
            end = _html_string_end(source, token.start())
            out.append(dot_string(source[token.start():end]))  # the brackets are the user's text too
            done = end
            continue
        if text.startswith('"'):
            out.append(dot_string(_ESC_STRING.sub(_unescape, text[1:-1].replace("\\\n", ""))))
        done = token.end()
    out.append(source[done:])
    return "".join(out)


def _html_string_end(source: str, start: int) -> int:
    """Where the <...> string starting at ``start`` ends, as Graphviz's lexer balances angle brackets."""
    depth = 0
    for index in range(start, len(source)):
        depth += {"<": 1, ">": -1}.get(source[index], 0)
        if depth == 0:
            return index + 1
    return len(source)


def _unescape(match: re.Match[str]) -> str:
    """An escString sequence as text: line breaks stay breaks, anything else (``\\N``...) is shown."""
    char = match.group(1)
    return "\n" if char in "nlr" else char if char in '"\\' else "\\" + char


def safe_svg(svg: str) -> str | None:
    """Graphviz's SVG made safe to put in a page, or None when it is not XML even after repair."""
    text = _repair_text(svg)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return None
    if _plainly_safe(text):
        return text
    writer = _SvgWriter()
    try:
        writer.parse(text)
    except expat.ExpatError:
        return None
    return writer.result()


def _repair_text(svg: str) -> str:
    """No character XML forbids, raw or as a reference; ``&amp;`` for our stand-in and for every ``&`` that
    does not start a reference XML knows. Each distinct reference is judged once (a big drawing has
    thousands of ``&#45;``)."""
    text = _XML_FORBIDDEN.sub("\ufffd", svg) if _XML_FORBIDDEN.search(svg) else svg
    fixes = {ref: fixed for ref in set(_REFERENCE.findall(text)) if (fixed := _repair_reference(ref)) != ref}
    if fixes:
        text = re.sub("|".join(map(re.escape, fixes)), lambda match: fixes[match.group()], text)
    return _BARE_AMP.sub("&amp;", text).replace(AMP, "&amp;")


def _repair_reference(ref: str) -> str:
    if not ref.startswith("&#"):
        return ref if ref[1:] in _XML_ENTITIES else "&amp;" + ref[1:]
    code = int(ref[3:-1], 16) if ref[2] in "xX" else int(ref[2:-1])
    if code == ord(AMP):
        return "&amp;"
    return "&#xfffd;" if code > 0x10FFFF or _XML_FORBIDDEN.match(chr(code)) else ref


def _plainly_safe(text: str) -> bool:
    """Well-formed, with only drawing elements and nothing that could be an event, a style, a link out, a
    processing instruction or CDATA: Graphviz's usual output, checked at C speed. Anything else (a false
    alarm included) is written again element by element."""
    low = text.lower()
    if "<?" in low or "<![" in low or _SUSPECT.search(low) or _LINK_OUT.search(low) or _URL_OUT.search(low):
        return False
    if not set(_ELEMENT.findall(text)) <= _SVG_ELEMENTS:
        return False
    try:
        expat.ParserCreate().Parse(text, True)
    except expat.ExpatError:
        return False
    return True


class _SvgWriter:
    """Writes back what expat reads, keeping drawing elements and safe attributes only."""

    def __init__(self) -> None:
        self._out: list[str] = []
        self._open = False  # a start tag written without its ">" yet: closed as "/>" if nothing follows
        self._skipping = 0  # depth inside a dropped element

    def parse(self, text: str) -> None:
        parser = expat.ParserCreate()
        parser.ordered_attributes = True
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.Parse(text, True)

    def result(self) -> str:
        return "".join(self._out)

    def _start(self, name: str, attrs: list[str]) -> None:
        if self._skipping or name not in _SVG_ELEMENTS:
            self._skipping += 1
            return
        self._close_tag()
        kept = "".join(f' {key}="{_attr(value)}"' for key, value in zip(attrs[::2], attrs[1::2], strict=True)
                       if _safe_attribute(key, value))
        self._out.append(f"<{name}{kept}")
        self._open = True

    def _end(self, name: str) -> None:
        if self._skipping:
            self._skipping -= 1
            return
        if self._open:
            self._out.append("/>")
            self._open = False
        else:
            self._out.append(f"</{name}>")

    def _text(self, data: str) -> None:
        if not self._skipping:
            self._close_tag()
            self._out.append(data.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))

    def _close_tag(self) -> None:
        if self._open:
            self._out.append(">")
            self._open = False


def _safe_attribute(key: str, value: str) -> bool:
    lower = key.lower()
    if lower.startswith("on") or lower in ("target", "style", "xlink:show", "xlink:actuate") \
            or lower.startswith("xmlns:") and lower != "xmlns:xlink":
        return False
    if _LINK.match(lower):
        return value.lstrip().startswith("#")
    return not _REMOTE_PAINT.search(value)


def _attr(value: str) -> str:
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return escaped.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
