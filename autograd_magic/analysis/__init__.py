"""Analysis: pure functions from a `Trace` to a `Report`.

build.py assembles the report; registry.py runs the diagnostic checks
(checks/, one function per kind); graphs.py turns graph snapshots into drawn
graphs; naming.py, lineage.py and source.py are the pure helpers they share.
"""

from __future__ import annotations

from .build import DEFAULT_MAX_NODES, build_report
from .registry import CHECKS, analyze

__all__ = ["CHECKS", "DEFAULT_MAX_NODES", "analyze", "build_report"]
