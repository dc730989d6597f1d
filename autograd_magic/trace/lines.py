"""The one line numbering: the numbers Python gives the code it ran.

Line 1 is the first line of the source that ran: the cell body under ``%%autograd`` (as
IPython's tracebacks count), the statement under ``%autograd``, the file itself for a script.
Capture records these numbers, and every message, row and drawing shows them unchanged. An
editor that shows more above the source (the ``%%autograd`` line) maps back with the report's
``first_line``, the editor line of line 1: editor line = line + first_line - 1.
"""

from __future__ import annotations

from collections.abc import Sequence


def source_line(lines: Sequence[str], line: int | None) -> str:
    """The text of ``line`` (stripped), or "" when it is not in ``lines``."""
    if line is None or not 1 <= line <= len(lines):
        return ""
    return lines[line - 1].strip()

