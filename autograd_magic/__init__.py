"""autograd_magic: see what PyTorch autograd did in a notebook cell.

``%load_ext autograd_magic`` registers the ``%%autograd`` cell magic and the
``%autograd`` line magic. The Python API: `Recorder` (a context manager that
records a block), `build_report`, and `Report`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from . import views as views  # registers how a Report shows and saves itself
from .analysis import build_report
from .capture import Recorder
from .report import Diagnostic, Report

__all__ = ["Diagnostic", "Recorder", "Report", "build_report", "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    from .magic import AutogradMagic

    if any(isinstance(c, AutogradMagic) for c in ipython.configurables):
        return  # loading twice is harmless
    ipython.register_magics(AutogradMagic(shell=ipython, parent=ipython))  # also lists it in shell.configurables
    if getattr(ipython, "kernel", None) is not None:
        _import_the_widget()


def _import_the_widget() -> None:
    """In a kernel the reports show as the widget: import it now (ipywidgets and anywidget, ~0.1 s), so
    the first %%autograd cell is as quick as the next. Without them the view says so when it shows."""
    with contextlib.suppress(ImportError):
        from .views import widget  # noqa: F401


def unload_ipython_extension(ipython: Any) -> None:
    from .magic import AutogradMagic

    table = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        bound = table[kind].get("autograd")
        if bound is not None and isinstance(getattr(bound, "__self__", None), AutogradMagic):
            table[kind].pop("autograd")
    ipython.magics_manager.registry.pop("AutogradMagic", None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, AutogradMagic)]
