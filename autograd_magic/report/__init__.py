"""The report model: what the views show, plain data that serialises to JSON."""

from __future__ import annotations

from .model import Diagnostic, Report

__all__ = ["Diagnostic", "Report"]
