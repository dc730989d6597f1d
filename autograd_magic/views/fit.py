"""Keep every label line inside its node box, whatever font the browser picks.

Graphviz sizes a box with its own metrics for Helvetica (graphviz-pure estimates them;
a system ``dot`` measures whatever font it finds). A browser without Helvetica draws the
text in its fallback, often DejaVu Sans, which is ~15% wider: long lines then cross both
borders and lose their first letters. `fit_labels` estimates each line with DejaVu Sans's
advance widths (the widest common fallback) and, where that would overflow the box, gives
the text an SVG ``textLength`` so the browser squeezes it to the box.
"""

from __future__ import annotations

import re

# DejaVu Sans advance widths for ASCII 32..126, in hundredths of an em (read from the font's hmtx)
_ASCII = bytes([
    32, 40, 46, 84, 64, 95, 78, 27, 39, 39, 50, 84, 32, 36, 32, 34, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 34,
    34, 84, 84, 84, 53, 100, 68, 69, 70, 77, 63, 58, 77, 75, 29, 29, 66, 56, 86, 75, 79, 60, 79, 69, 63, 61, 73,
    68, 99, 69, 61, 69, 39, 34, 39, 84, 50, 50, 61, 63, 55, 63, 62, 35, 63, 63, 28, 28, 58, 28, 97, 63, 61, 63,
    63, 41, 52, 39, 63, 59, 82, 59, 59, 52, 64, 34, 64, 84,
])
_WIDE = 100  # anything else (⚠, ✂, …, CJK): a full em, to be safe
_PAD = 4.0  # points kept clear of the border on each side
_NODE_START = re.compile(r'<g id="[^"]*" class="node[^"]*">')
_NODE_END = "</g>\n"  # a node's group ends with one followed by the next element's comment or the graph's end
_TEXT = re.compile(r'<text ([^>]*?)font-size="([\d.]+)">([^<]*)</text>')
_POINT = re.compile(r"(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)")
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[a-z]+);")
# each ASCII character's width as a byte, for a whole line in one C pass (`bytes.translate`, then `sum`)
_BYTE_WIDTHS = bytes(_ASCII[b - 32] if 32 <= b < 127 else _WIDE for b in range(256))


def fit_labels(svg: str) -> str:
    """Every node's text lines, squeezed where DejaVu Sans would overflow the node's box."""
    parts: list[str] = []
    done = 0
    for start in _NODE_START.finditer(svg):
        if start.start() < done:
            continue  # inside a node already fitted
        body = start.end()
        end = _node_end(svg, body)
        if end < 0:
            break
        parts += [svg[done:body], _fit_node(svg[body:end])]
        done = end
    parts.append(svg[done:])
    return "".join(parts)


def _node_end(svg: str, body: int) -> int:
    """Where a node's body ends: at the first group end followed by a comment or another group end."""
    end = svg.find(_NODE_END, body)
    while end >= 0 and not svg.startswith(("<!--", "</g>"), end + len(_NODE_END)):
        end = svg.find(_NODE_END, end + 1)
    return end


def text_width(text: str, font_size: float) -> float:
    """Width in points of ``text`` in DejaVu Sans at ``font_size``."""
    ascii_part = text.encode("ascii", "ignore")  # each other character is a full em
    hundredths = sum(ascii_part.translate(_BYTE_WIDTHS)) + _WIDE * (len(text) - len(ascii_part))
    return hundredths * font_size / 100


def _fit_node(body: str) -> str:
    xs = [float(x) for x, _ in _POINT.findall(_shape_of(body))]
    if not xs:
        return body
    room = max(xs) - min(xs) - 2 * _PAD

    def fit(match: re.Match[str]) -> str:
        attrs, size, content = match.groups()
        if text_width(_ENTITY.sub("x", content), float(size)) <= room:
            return match.group(0)
        return (f'<text {attrs}font-size="{size}" textLength="{room:.2f}" '
                f'lengthAdjust="spacingAndGlyphs">{content}</text>')

    return _TEXT.sub(fit, body)


def _shape_of(body: str) -> str:
    """The first path or polygon of a node: its box."""
    found = re.search(r'<(?:path|polygon) [^>]*?(?:d|points)="([^"]*)"', body)
    return found.group(1) if found else ""
