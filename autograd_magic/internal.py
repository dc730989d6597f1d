"""What happens when autograd_magic itself fails: never the user's problem.

Failures are logged and counted so the view can say the report may be
incomplete. Tests set `RAISE` so that our bugs fail loudly there.
"""

from __future__ import annotations

import logging

RAISE = False
log = logging.getLogger("autograd_magic")
_failures: list[str] = []


def report_failure(what: str) -> None:
    """Call from an ``except`` block; re-raises only when `RAISE` is set."""
    if RAISE:
        raise
    log.debug("internal failure while %s", what, exc_info=True)
    if len(_failures) < 20:
        _failures.append(what)


def take_failures() -> list[str]:
    """The failures since the last call, oldest first."""
    taken = list(_failures)
    _failures.clear()
    return taken
