"""`Trace.training` → the report's `Training`: per-step rows keyed by parameter name, norms to 4 digits."""

from __future__ import annotations

from ..report.model import Diagnostic, Training, TrainingStepRow
from ..trace.events import TrainingTrace


def build_training(training: TrainingTrace | None, diagnostics: list[Diagnostic],
                   kinds: frozenset[str]) -> Training | None:
    """The report's gradient-flow section, with the diagnostics of ``kinds`` it explains."""
    if training is None:
        return None
    names = training.parameters
    steps = tuple(TrainingStepRow(s.step, _short(s.loss), _by_name(names, s.grad_norms),
                                  _by_name(names, s.update_ratios)) for s in training.steps)
    return Training(parameters=training.parameters, steps=steps,
                    diagnostics=tuple(d for d in diagnostics if d.kind in kinds),
                    line=training.line, untracked=training.untracked, unread=training.unread,
                    stride=training.stride, calls=training.calls, no_ratio=training.no_ratio,
                    unwatched_from=training.unwatched_from)


def _by_name(names: tuple[str, ...], values: tuple[float | None, ...]) -> dict[str, float]:
    """Parameter -> value to 4 digits; the parameters without one are left out."""
    return {name: float(f"{v:.4g}") for name, v in zip(names, values, strict=False) if v is not None}


def _short(value: float | None) -> float | None:
    """Four significant digits: a plot needs no more, and a 1,000-step loop's JSON stays small."""
    return None if value is None else float(f"{value:.4g}")
