"""Where in the cell a call happened: line, source text, assigned name.

A line is the number Python itself gives the code (its code objects, its tracebacks): line 1 is
the first line of the source run, the cell body for ``%%autograd`` and the file's own line for a
script. This is the only numbering in the trace and the report; ``first_line`` (the editor line
of source line 1) only travels along so an editor can map back.

Everything here is computed once per code object (or per instruction) and
cached, because it runs on the recorder's hot path.
"""

from __future__ import annotations

import dis
from types import CodeType, FrameType

from ..trace.events import Site
from ..trace.lines import source_line
from .compat import getframe, instruction_index, positions

_STORES = {"STORE_NAME", "STORE_FAST", "STORE_GLOBAL", "STORE_DEREF"}


def store_targets(code: CodeType) -> dict[int, str | tuple[str, ...]]:
    """Map each instruction offset to the name(s) its result is stored in next."""
    insts = [i for i in dis.get_instructions(code) if i.opname != "CACHE"]
    targets: dict[int, str | tuple[str, ...]] = {}
    for index, here in enumerate(insts[:-1]):
        nxt = insts[index + 1]
        if nxt.opname in _STORES:
            targets[here.offset] = str(nxt.argval)
        elif nxt.opname == "UNPACK_SEQUENCE" and isinstance(nxt.arg, int):
            stores = insts[index + 2 : index + 2 + nxt.arg]
            if len(stores) == nxt.arg and all(s.opname in _STORES for s in stores):
                targets[here.offset] = tuple(str(s.argval) for s in stores)
    return targets


class SiteTable:
    """Turns (code, instruction offset) into a `Site`, for code of one cell."""

    def __init__(self, source: str, filename: str | None) -> None:
        self.lines = source.splitlines()
        self.filename = filename
        # every table is keyed by id(code), with the code kept for identity: hashing a code object
        # costs its whole length, and these run for each recorded op and each backward call
        self._positions: dict[int, tuple[CodeType, list[tuple[int | None, int | None, int | None, int | None]]]] = {}
        self._targets: dict[int, tuple[CodeType, dict[int, str | tuple[str, ...]]]] = {}
        self._sites: dict[tuple[int, int], tuple[CodeType, Site]] = {}
        self._user: dict[int, tuple[CodeType, bool]] = {}
        self._torch: dict[int, tuple[CodeType, bool]] = {}

    def is_user_code(self, code: CodeType) -> bool:
        known = self._user.get(id(code))
        if known is None or known[0] is not code:
            known = self._user[id(code)] = (code, self._classify(code))
        return known[1]

    def _classify(self, code: CodeType) -> bool:
        if self.filename is not None:
            return code.co_filename == self.filename
        # used as a library: the first frame outside torch and ourselves is the user's
        name = code.co_filename
        return not any(part in name for part in _LIBRARY_MARKERS)

    def is_torch_code(self, code: CodeType) -> bool:
        """Code of torch's own Python library (gradcheck, optimizers, nn.init), not the user's."""
        known = self._torch.get(id(code))
        if known is None or known[0] is not code:
            known = self._torch[id(code)] = (code, any(part in code.co_filename for part in _TORCH_MARKERS))
        return known[1]

    def user_frame(self, depth: int) -> FrameType | None:
        """The innermost frame of user code above the caller at ``depth``."""
        frame: FrameType | None = getframe(depth + 1)
        while frame is not None and not self.is_user_code(frame.f_code):
            frame = frame.f_back
        return frame

    def user_frame_from(self, frame: FrameType | None) -> FrameType | None:
        while frame is not None and not self.is_user_code(frame.f_code):
            frame = frame.f_back
        return frame

    def site(self, frame: FrameType | None) -> Site:
        if frame is None:
            return Site(None)
        code, lasti = frame.f_code, frame.f_lasti
        found = self._sites.get((id(code), lasti))
        if found is None or found[0] is not code:
            found = self._sites[(id(code), lasti)] = (code, self._make_site(code, lasti))
        return found[1]

    def target(self, frame: FrameType | None) -> str | tuple[str, ...] | None:
        if frame is None:
            return None
        code = frame.f_code
        found = self._targets.get(id(code))
        if found is None or found[0] is not code:
            found = self._targets[id(code)] = (code, store_targets(code))
        return found[1].get(frame.f_lasti)

    def line_text(self, line: int | None) -> str:
        return source_line(self.lines, line)

    def _make_site(self, code: CodeType, lasti: int) -> Site:
        found = self._positions.get(id(code))
        if found is None or found[0] is not code:
            found = self._positions[id(code)] = (code, positions(code))
        table = found[1]
        index = instruction_index(lasti)
        if not 0 <= index < len(table) or table[index][0] is None:
            return Site(None)
        start, stop, col, end_col = table[index]
        return Site(start, self.line_text(start), self._expr_text(start, stop, col, end_col))

    def _expr_text(self, start: int | None, stop: int | None, col: int | None, end_col: int | None) -> str:
        if start is None or stop is None or col is None or end_col is None:
            return ""
        if not 1 <= start <= stop <= len(self.lines):
            return ""
        chunk = [line.encode() for line in self.lines[start - 1 : stop]]
        if len(chunk) == 1:
            return chunk[0][col:end_col].decode(errors="replace")
        chunk[0], chunk[-1] = chunk[0][col:], chunk[-1][:end_col]
        return b"\n".join(chunk).decode(errors="replace")


_TORCH_MARKERS = ("/torch/", "\\torch\\")
_LIBRARY_MARKERS = (*_TORCH_MARKERS, "/autograd_magic/", "\\autograd_magic\\", "<frozen ", "/contextlib.py")

