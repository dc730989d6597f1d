"""Which line numbers the views show: the cell body's, counted as IPython's tracebacks count them.

The report stores editor lines (the ``%%autograd`` line is line 1, ``report.first_line`` is the
body's first line). A traceback printed beside the report says "line 10" for the body's tenth
line, so a report saying "line 11" for the same line would contradict it on screen. Every view
therefore shows body lines: `for_display` shifts every line number of a report, including the
"line N" inside messages and rebound names like ``b (line 3)``, before it is drawn.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ..report.model import Diagnostic, Graph, Replay, Report, Training

_LINE = re.compile(r"\b(lines? )(\d+)((?:(?:, | and | or |-)\d+)*)")
_NUMBER = re.compile(r"\d+")
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")  # user code in messages: never renumbered


def for_display(report: Report) -> Report:
    """A copy of ``report`` with body line numbers everywhere (idempotent: its first_line is 1)."""
    shift = report.first_line - 1
    if shift == 0:
        return report
    return replace(
        report,
        first_line=1,
        diagnostics=[_diagnostic(d, shift) for d in report.diagnostics],
        tensors={_text(k, shift): replace(r, name=_text(r.name, shift), line=_line(r.line, shift))
                 for k, r in report.tensors.items()},
        gradients={_text(k, shift): replace(r, name=_text(r.name, shift)) for k, r in report.gradients.items()},
        graphs=[_graph(g, shift) for g in report.graphs],
        ops=[replace(op, line=_line(op.line, shift)) for op in report.ops],
        error=replace(report.error, line=_line(report.error.line, shift)) if report.error else None,
        backward_steps=[_replay(r, shift) for r in report.backward_steps],
        training=_training(report.training, shift),
    )


def _replay(r: Replay, shift: int) -> Replay:
    return replace(r, line=_line(r.line, shift), root=_text(r.root, shift) if r.root else r.root,
                   steps=tuple(replace(s, line=_line(s.line, shift), name=_text(s.name, shift) if s.name else s.name)
                               for s in r.steps))


def _training(t: Training | None, shift: int) -> Training | None:
    if t is None:
        return None
    return replace(t, line=_line(t.line, shift), diagnostics=tuple(_diagnostic(d, shift) for d in t.diagnostics))


def _diagnostic(d: Diagnostic, shift: int) -> Diagnostic:
    return replace(d, line=_line(d.line, shift), names=tuple(_text(n, shift) for n in d.names),
                   message=_text(d.message, shift))


def _graph(g: Graph, shift: int) -> Graph:
    return replace(
        g,
        root=_text(g.root, shift) if g.root else g.root,
        line=_line(g.line, shift),
        nodes=tuple(replace(n, line=_line(n.line, shift), name=_text(n.name, shift) if n.name else n.name)
                    for n in g.nodes),
        cuts=tuple(replace(c, line=_line(c.line, shift), target=_text(c.target, shift)) for c in g.cuts),
        memory=g.memory and replace(g.memory, holders=tuple(
            replace(h, line=_line(h.line, shift), name=_text(h.name, shift) if h.name else h.name)
            for h in g.memory.holders)),
    )


def _line(line: int | None, shift: int) -> int | None:
    return None if line is None else max(1, line - shift)


def _text(text: str, shift: int) -> str:
    """Shift each "line N" (and "lines N and M") outside backtick code spans."""
    parts = _CODE_SPAN.split(text)
    return "".join(part if index % 2 else _LINE.sub(lambda m: _shift_match(m, shift), part)
                   for index, part in enumerate(parts))


def _shift_match(match: re.Match[str], shift: int) -> str:
    rest = _NUMBER.sub(lambda n: str(max(1, int(n.group()) - shift)), match.group(3))
    return f"{match.group(1)}{max(1, int(match.group(2)) - shift)}{rest}"

