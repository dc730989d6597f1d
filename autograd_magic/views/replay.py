"""The backward replay in static HTML: one numbered list of steps per recorded backward call.

(The widget steps through the same rows interactively: see ``static/replay.js``.)
"""

from __future__ import annotations

from ..report.model import Report, Step
from .escape import html_text as _e
from .text import replay_title, shown_steps, value_text

MAX_HTML_STEPS = 60  # steps listed per backward in the static page; the widget steps through all

STYLE = """
<style>
.agm .replay li{margin:2px 0}
.agm .replay .words{color:var(--jp-ui-font-color2,#555)}
.agm .replay code{white-space:pre-wrap}
</style>
"""


def replays_html(report: Report) -> str:
    """Each backward call's replay, step by step."""
    if not report.backward_steps:
        return ""
    parts = [STYLE]
    for index, replay in enumerate(report.backward_steps, 1):
        notes = "".join(f'<div class="hint">{_e(note)}</div>' for note in replay.notes)
        items = "".join(f'<li value="{step.number}">{step_html(step)}</li>' if step is not None else
                        f'<li class="hint" style="list-style:none">… {len(replay.steps) - MAX_HTML_STEPS} more '
                        "steps (all in report.backward_steps)</li>"
                        for step in shown_steps(replay.steps, MAX_HTML_STEPS))
        parts.append(f'<details class="replay"{" open" if index == 1 else ""}><summary><b>'
                     f"{_e(replay_title(replay, index))}</b></summary>{notes}<ol>{items}</ol></details>")
    return "".join(parts)


def step_html(step: Step) -> str:
    what = f" ({step.name} = {step.code})" if step.name and step.code else (f" ({step.name})" if step.name else "")
    arrived = ", ".join(value_text(v) for v in step.arrived) or "—"
    lines = [f"<b>{_e(step.label)}</b>{_e(what)}: gradient arrived <code>{_e(arrived)}</code>"]
    if step.summed:
        lines.append(f"summed over paths: <code>{_e(step.summed)}</code>")
    lines.append(f'<span class="words">{_e(step.words)}</span>')
    lines += [f"<code>{_e(flow.formula)}</code>" for flow in step.sent if flow.formula]
    return "<br>".join(lines)
