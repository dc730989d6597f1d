"""The trace: plain frozen records of what a cell did, and the text helpers both sides share.

No torch, no IPython: capture writes these, analysis reads them.
"""

from __future__ import annotations

from .events import Trace

__all__ = ["Trace"]
