"""An error raised after recording stopped, placed where the checks look for it.

Past a training loop's recorded steps the loop runs unwatched (capture/optimizers.py), so the call that
raised was not recorded. The checks explain an error from the failed call on the timeline; for one raised
unwatched, that call is rebuilt from what the recorded steps showed at the same line (the recorded call
there, or a bare backward call), appended after every recorded op, with the error torch raised. The
explanation then rests on the recorded steps, and `note_unwatched` says so.
"""

from __future__ import annotations

from dataclasses import replace

from ..report.model import Diagnostic
from ..trace.events import BackwardEvent, OpEvent, Trace

_BACKWARD_CALLS = (".backward(", "autograd.backward(", "autograd.grad(")


def with_unwatched_error(trace: Trace) -> Trace:
    """The trace, with the failed call appended when the error that ended the cell was raised unwatched."""
    error = trace.error
    if error is None or not error.unwatched or error.site.line is None:
        return trace
    raised = f"{error.type}: {error.message}"
    seq = max((op.seq for op in trace.ops), default=0) + 1
    line = error.site.line
    backward = next((b for b in reversed(trace.backwards) if b.site.line == line), None)
    if backward is not None or any(call in error.site.code for call in _BACKWARD_CALLS):
        failed = (replace(backward, seq=seq, error=raised, leaf_grads=(), steps=(), calls=1) if backward is not None
                  else BackwardEvent(seq, "backward", error.site, None, error=raised))
        op = OpEvent(seq=seq, func=failed.func, site=failed.site, inputs=(failed.root,) if failed.root else ())
        return replace(trace, ops=(*trace.ops, op), backwards=(*trace.backwards, failed))
    recorded = next((op for op in reversed(trace.ops) if op.site.line == line and not op.error), None)
    if recorded is None:
        return trace
    return replace(trace, ops=(*trace.ops, replace(recorded, seq=seq, error=raised, outputs=())))


def note_unwatched(diagnostics: list[Diagnostic], trace: Trace) -> list[Diagnostic]:
    """Each error's explanation says when it rests on the recorded steps only."""
    error = trace.error
    if error is None or not error.unwatched or trace.loop_left_after is None:
        return diagnostics
    note = (f"\nThis was raised after recording stopped: the loop ran unwatched from the optimizer step of "
            f"step {trace.loop_left_after} on, so it is explained from what the steps recorded before showed "
            f"(--every-step watches every step).")
    return [replace(d, message=d.message + note) if d.severity == "error" else d for d in diagnostics]
