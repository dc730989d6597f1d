"""Views: pure functions of a `Report` — text, static HTML, the graph drawing, the widget.

Importing this package registers the views with the report model, so that a
`Report` displays itself (``_repr_mimebundle_``) and saves itself without the
model importing its views.
"""

from __future__ import annotations

from ..report.model import register_views
from . import display

register_views(display)

__all__ = ["display"]
