"""Gradient flow across training steps, as compact tables for the text and static HTML views.

Per parameter: its gradient norm at the first and last step and the smallest and largest
in between, and its update/weight ratio at the last step that has one; then the loss and
total gradient norm at a few sampled steps. The widget draws the full series as a plot
(``static/widget.js``, the Training panel).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..report.model import Training
from .escape import html_text as _e

MAX_PARAMETER_ROWS = 30
SAMPLED_STEPS = 6
RULE_OF_THUMB = "about 1e-3 is the usual rule of thumb"


@dataclass(frozen=True)
class ParameterSummary:
    name: str
    first: float | None
    last: float | None
    low: float | None
    high: float | None
    steps_with_grad: int
    ratio: float | None = None  # update/weight at the last step with ratios


def summarize(training: Training) -> list[ParameterSummary]:
    """One row per parameter, in the order the model lists them."""
    rows = []
    ratios = last_ratios(training)
    for name in training.parameters:
        series = [s.grad_norms.get(name) for s in training.steps]
        seen = [v for v in series if v is not None]
        finite = [v for v in seen if math.isfinite(v)]
        rows.append(ParameterSummary(name, series[0] if series else None, series[-1] if series else None,
                                     min(finite, default=None), max(finite, default=None), len(seen),
                                     None if ratios is None else ratios[1].get(name)))
    return rows


def last_ratios(training: Training) -> tuple[int, dict[str, float]] | None:
    """(step, parameter -> update/weight) of the last step whose update was seen; None when none was."""
    return next(((s.step, s.update_ratios) for s in reversed(training.steps) if s.update_ratios), None)


def ratio_notes(training: Training) -> list[str]:
    """What the update/weight column means, in one line, and which parameters have none."""
    ratios = last_ratios(training)
    notes = [] if ratios is None else [
        f"update/weight: ||Δw|| / ||w|| of the update after backward {ratios[0]}; {RULE_OF_THUMB}"]
    if training.no_ratio:
        notes.append(f"{training.no_ratio} parameters too big to copy (over 256 KiB, or 4 MiB in all) "
                     "have no update/weight ratio")
    return notes


def sampled_steps(training: Training) -> list[tuple[int, float | None, float]]:
    """(step, loss, total gradient norm) at evenly spaced steps, first and last included."""
    steps = training.steps
    if not steps:
        return []
    picks = sorted({round(i * (len(steps) - 1) / (SAMPLED_STEPS - 1)) for i in range(SAMPLED_STEPS)})
    return [(steps[i].step, steps[i].loss, _total(steps[i].grad_norms.values())) for i in picks]


def heading(training: Training) -> str:
    extra = []
    if training.untracked:
        extra.append(f"{training.untracked} more parameters not followed (at most {len(training.parameters)})")
    if training.stride > 1:
        why = "a long loop" if training.unwatched_from is None else "a long loop, or reads held to 2% of its time"
        extra.append(f"every {training.stride}th step kept ({why})")
    if training.unread:
        extra.append(f"{training.unread} steps run under a profiler were not read")
    if training.unwatched_from is not None:
        extra.append(f"steps from {training.unwatched_from:,} on read at their optimizer step (the loop ran unwatched)")
    where = "" if training.line is None else f" (backward at line {training.line})"
    return (f"Training: {training.calls} steps{where}, gradient norm per parameter after each backward"
            + (f"; {'; '.join(extra)}" if extra else ""))


def training_text(training: Training | None) -> list[str]:
    if training is None:
        return []
    ratio = last_ratios(training) is not None
    rows = [("parameter", "first", "last", "min", "max", "steps with grad", *(["update/weight"] if ratio else []))]
    for r in summarize(training)[:MAX_PARAMETER_ROWS]:
        rows.append((r.name, _num(r.first), _num(r.last), _num(r.low), _num(r.high), str(r.steps_with_grad),
                     *([_num(r.ratio)] if ratio else [])))
    more = len(training.parameters) - MAX_PARAMETER_ROWS
    steps = [("step", "loss", "total grad norm")]
    steps += [(str(step), _num(loss), _num(total)) for step, loss, total in sampled_steps(training)]
    return [heading(training), *_table(rows), *([f"  ... and {more} more parameters"] if more > 0 else []),
            *(f"  {note}" for note in ratio_notes(training)), "", *_table(steps)]


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def training_html(training: Training | None) -> str:
    if training is None:
        return ""
    ratio = last_ratios(training) is not None
    head = _head("parameter", "first", "last", "min", "max", "steps with grad", *(["update/weight"] if ratio else []))
    rows = "".join(f"<tr><td><code>{_e(r.name)}</code></td><td>{_num(r.first)}</td><td>{_num(r.last)}</td>"
                   f"<td>{_num(r.low)}</td><td>{_num(r.high)}</td><td>{r.steps_with_grad}</td>"
                   + (f"<td>{_num(r.ratio)}</td>" if ratio else "") + "</tr>"
                   for r in summarize(training)[:MAX_PARAMETER_ROWS])
    more = len(training.parameters) - MAX_PARAMETER_ROWS
    more_row = f'<div class="hint">and {more} more parameters</div>' if more > 0 else ""
    more_row += "".join(f'<div class="hint">{_e(note)}</div>' for note in ratio_notes(training))
    sampled = "".join(f"<tr><td>{step}</td><td>{_num(loss)}</td><td>{_num(total)}</td></tr>"
                      for step, loss, total in sampled_steps(training))
    return (f'<h4>{_e(heading(training))}</h4><table class="training">{head}{rows}</table>{more_row}'
            f'<table class="training-steps">{_head("step", "loss", "total grad norm")}{sampled}</table>')


def _total(norms: Iterable[float]) -> float:
    return math.sqrt(sum(v * v for v in norms))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _head(*titles: str) -> str:
    return "<tr>" + "".join(f"<th>{title}</th>" for title in titles) + "</tr>"
