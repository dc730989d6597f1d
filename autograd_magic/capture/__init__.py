"""Capture: run a cell under a recorder and turn what torch did into a `Trace`.

`Recorder` (recorder.py) is the public context manager; `mode.RecordingMode` is
the tiny private TorchFunctionMode under it; backward.py and snapshot.py record
backward calls and the graphs they free; sites.py, tensors.py and namespace.py
read where a call came from and what a tensor looks like; session.py is what is
remembered across cells; cellrun.py runs a cell the way IPython does.
"""

from __future__ import annotations

from .recorder import DEFAULT_MAX_REPEATS, Recorder

__all__ = ["DEFAULT_MAX_REPEATS", "Recorder"]
