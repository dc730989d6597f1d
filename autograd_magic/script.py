"""``autograd-magic run script.py [args ...]``: a Python file run as ``python script.py`` runs it, recorded.

The script's file plays the part of the notebook cell: its lines (in functions too) are the ones
the report names, by their real line numbers; modules it imports are library code, as they are
to a cell. The script runs as ``__main__`` with its own ``sys.argv`` and ``sys.path[0]``; its
output, exceptions and exit code are the plain run's. The text report goes to stderr after it
ends (before the traceback, as the notebook shows it above one), and ``--save`` writes the
HTML/JSON report. No IPython is imported.
"""

from __future__ import annotations

import argparse
import builtins
import functools
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any

from . import internal
from .analysis import DEFAULT_MAX_NODES, build_report
from .capture import Recorder
from .capture.mode import without_own_frames
from .report import Report
from .views.escape import terminal_text
from .views.text import render_text

SAVE_SUFFIXES = (".json", ".html", ".htm", ".svg")
_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (  # the words before the script that are ours
    (("--save",), dict(metavar="PATH", action="append",
                       help="also write the report to PATH (.html, .json or .svg); may be given more than once")),
    (("-q", "--quiet"), dict(action="store_true", help="print no report (with --save: only save it)")),
    (("--no-graph",), dict(action="store_true", help="skip the graphs (faster for huge scripts)")),
    (("--max-nodes",), dict(type=int, metavar="N", help=f"at most N nodes per graph ({DEFAULT_MAX_NODES})")),
    (("--depth",), dict(type=int, metavar="N", help="fold nn.Modules deeper than N levels into one node")),
    (("--gradcheck",), dict(action="store_true",
                            help="after the script, compare each custom autograd.Function's backward with finite "
                                 "differences (calls its forward again on float64 copies)")),
)


@dataclass(frozen=True)
class Script:
    """A script ready to run: the path as typed (its ``sys.argv[0]``), its absolute path, source and code."""

    typed: str
    path: str
    source: str
    code: CodeType


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: ``autograd-magic run [options] script.py [args ...]``.

    Returns 0 when the script ends normally; its ``SystemExit`` and exceptions propagate, after the
    report, so Python ends the process exactly as it ends ``python script.py``.
    """
    options, typed, args = parse(list(sys.argv[1:] if argv is None else argv))
    try:
        script = load(typed)
    except OSError as error:  # worded as Python's own `python nope.py`, and the same status
        print(f"{_prog()}: can't open file {absolute(typed)!r}: [Errno {error.errno}] {error.strerror}",
              file=sys.stderr)
        return 2
    except SyntaxError:
        _print_from(None)  # the file and line alone, as Python prints a script's SyntaxError
        raise
    run(script, args, options)
    return 0


def parse(argv: list[str]) -> tuple[argparse.Namespace, str, list[str]]:
    """Our options come before the script; every word after it is the script's own, as with ``python -m pdb``."""
    if not argv or argv[0] != "run":
        parser = _parser()
        if argv and argv[0] in ("-h", "--help"):
            parser.exit(0, parser.format_help())
        hint = f" (did you mean: {_prog()} run {argv[0]} ...?)" if argv and not argv[0].startswith("-") else ""
        parser.error(f"the first word must be 'run'{hint}")
    parser = _run_parser()
    words = argv[1:]
    ours, at = _split(words)
    options = parser.parse_args(ours + ["--", words[at]] if at < len(words) else ours)
    if options.script is None:
        parser.error("the script to run is missing")
    for path in options.save or ():
        if Path(path).suffix.lower() not in SAVE_SUFFIXES:
            parser.error(f"--save {path}: the name must end in {', '.join(SAVE_SUFFIXES)}")
    if options.max_nodes is not None and options.max_nodes < 1:
        parser.error("--max-nodes must be a positive number")
    if options.depth is not None and options.depth < 0:
        parser.error("--depth must be 0 or more")
    return options, options.script, words[at + 1:]


def _split(words: list[str]) -> tuple[list[str], int]:
    """Our options (with their values), and where the script's path is in ``words`` (``len(words)``: none)."""
    takes_value = {name for names, spec in _OPTIONS if spec.get("action") != "store_true" for name in names}
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            return words[:index], index + 1  # `run -- -odd-name.py`: what follows is the script, whatever its name
        if not word.startswith("-") or word == "-":
            break
        index += 2 if word in takes_value else 1  # `--save=x.html` is one word
    return words[:index], index


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(), description="Run a Python script as `python script.py` would, and report what autograd did.",
        epilog=f"Run `{_prog()} run --help` for the options.", allow_abbrev=False)
    parser.add_argument("command", choices=["run"], help="run a script under the recorder")
    parser.usage = f"{_prog()} run [options] SCRIPT [ARGS ...]"
    return parser


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{_prog()} run", allow_abbrev=False, usage="%(prog)s [options] SCRIPT [ARGS ...]",
        description="Run SCRIPT as `python SCRIPT ARGS...` would (same sys.argv, __main__, output, exceptions "
                    "and exit status), then print the text report of what autograd did to stderr. Options go "
                    "before SCRIPT; every word after it is the script's own.")
    for names, spec in _OPTIONS:
        parser.add_argument(*names, **spec)
    parser.add_argument("script", nargs="?", metavar="SCRIPT", help="the Python file to run")
    parser.add_argument("args", nargs="*", metavar="ARGS", help="the script's own arguments (its sys.argv[1:])")
    return parser


def _prog() -> str:
    """How the user called us: `autograd-magic`, or `python -m autograd_magic`."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if called in ("", "__main__.py", "-c"):
        return f"{os.path.basename(sys.executable) or 'python'} -m autograd_magic"
    return called


def load(typed: str) -> Script:
    """Read and compile the script as Python would; a SyntaxError propagates, as from `python script.py`."""
    path = absolute(typed)
    with open(path, "rb") as file:
        data = file.read()
    # from bytes: the file's coding cookie counts; dont_inherit: our `from __future__` imports must not leak in
    code = compile(data, path, "exec", dont_inherit=True)
    return Script(typed, path, importlib.util.decode_source(data), code)


def absolute(typed: str) -> str:
    """The script's ``__file__``: joined to the working directory but not normalised (``./x.py`` stays), as
    Python makes it, so tracebacks and warnings name the same path."""
    return typed if os.path.isabs(typed) else os.path.join(os.getcwd(), typed)


def run(script: Script, args: Sequence[str], options: argparse.Namespace) -> None:
    """Run the script as ``__main__`` under a `Recorder`, then report; how it ended is re-raised after."""
    namespace = _become_main(script, args)
    recorder = Recorder(source=script.source, filename=script.path, namespace=namespace, first_line=1,
                        gradcheck=options.gradcheck)
    ended: SystemExit | None = None
    try:
        with recorder:
            try:
                exec(script.code, namespace)
            except SystemExit as exiting:  # how a script ends, not an error of it: the report says nothing
                ended = exiting
    except BaseException:
        _present(recorder, options)
        _print_from(script.code)
        raise
    _present(recorder, options)
    if ended is not None:
        raise ended


def _become_main(script: Script, args: Sequence[str]) -> dict[str, Any]:
    """Make the script's module ``__main__``, with its argv and path, as ``python script.py`` does."""
    had_annotations = "__annotations__" in vars(sys.modules["__main__"])  # Python made one (before 3.14)
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __file__=script.path, __cached__=None, __package__=None, __spec__=None, __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", script.path))
    if had_annotations:
        module.__dict__["__annotations__"] = {}
    sys.modules["__main__"] = module  # kept to the end, as Python keeps the script's
    sys.argv[:] = [script.typed, *args]
    if not getattr(sys.flags, "safe_path", False):  # `python -P` puts no directory first
        sys.path[0] = os.path.dirname(os.path.realpath(script.path))
    return module.__dict__


def _present(recorder: Recorder, options: argparse.Namespace) -> None:
    """Print the report to stderr and save it; our failure never changes how the script ends."""
    try:
        report = _report(recorder, options)
        if report is None:
            return
        for path in options.save or ():
            _save(report, path)
        if not options.quiet:
            _flush(sys.stdout)  # the script's output first, where both streams share a terminal
            print(render_text(report), file=sys.stderr, flush=True)
    except Exception:
        internal.report_failure("showing the report")
        print("autograd_magic: could not show the report (internal error); the script itself ran normally.",
              file=sys.stderr)


def _report(recorder: Recorder, options: argparse.Namespace) -> Report | None:
    if recorder.trace is None:
        return None
    report = build_report(recorder.trace, max_nodes=options.max_nodes or DEFAULT_MAX_NODES,
                          graphs=not options.no_graph, depth=options.depth)
    report.hints.extend(f"autograd_magic failed while {what}; the report may be incomplete."
                        for what in dict.fromkeys(internal.take_failures()))
    return report


def _save(report: Report, path: str) -> None:
    try:
        report.save(path)
    except (ValueError, OSError) as error:  # a bad path must not hide the report
        print(terminal_text(f"autograd_magic: could not save the report to {path}: {error}"), file=sys.stderr)


def _flush(stream: Any) -> None:
    flush: Callable[[], Any] | None = getattr(stream, "flush", None)
    try:
        if flush is not None:
            flush()
    except (OSError, ValueError):  # closed or broken: Python reports that itself at exit, as after a plain run
        pass


def _print_from(code: CodeType | None) -> None:
    """Have Python print the uncaught exception as ``python script.py`` would: from the script's first
    frame on (none at all before it ran: a SyntaxError), and without our frames inside it."""
    sys.excepthook = functools.partial(_from_script, sys.excepthook, code)


def _from_script(hook: Callable[..., Any], code: CodeType | None, kind: type[BaseException], error: BaseException,
                 tb: TracebackType | None) -> Any:
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    error.with_traceback(tb)
    _hide_own_frames(error)
    return hook(kind, error, error.__traceback__)


def _hide_own_frames(error: BaseException) -> None:
    """The recorder's frames, in the exception and in those it was raised from (IPython hides them by
    their ``__tracebackhide__``; Python's own printing does not)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.with_traceback(without_own_frames(current.__traceback__))
        pending += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]
