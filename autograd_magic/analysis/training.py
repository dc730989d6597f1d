"""`Trace.training` → the report's `Training`: per-step rows keyed by parameter name, norms to 4 digits."""

from __future__ import annotations

from ..report.model import Diagnostic, Training, TrainingStepRow
from ..trace.events import TrainingTrace


def build_training(training: TrainingTrace | None, diagnostics: list[Diagnostic],
                   kinds: frozenset[str]) -> Training | None:
    """The report's gradient-flow section, with the diagnostics of ``kinds`` it explains."""
    if training is None:
        return None
    steps = tuple(TrainingStepRow(s.step, _short(s.loss), {
        name: float(f"{norm:.4g}") for name, norm in zip(training.parameters, s.grad_norms, strict=False)
        if norm is not None
    }) for s in training.steps)
    return Training(parameters=training.parameters, steps=steps,
                    diagnostics=tuple(d for d in diagnostics if d.kind in kinds),
                    line=training.line, untracked=training.untracked, unread=training.unread,
                    stride=training.stride, calls=training.calls)


def _short(value: float | None) -> float | None:
    """Four significant digits: a plot needs no more, and a 1,000-step loop's JSON stays small."""
    return None if value is None else float(f"{value:.4g}")
