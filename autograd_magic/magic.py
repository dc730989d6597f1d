"""The ``%%autograd`` / ``%autograd`` magics: IPython glue only.

Parse options, run the cell under a `Recorder`, build the report and display
it. The cell's own value is returned (so it shows as ``Out[n]``) and its
exception re-raised, after the report of what ran.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split
from traitlets import Bool, Enum, Int

from . import internal
from .analysis import DEFAULT_MAX_NODES, build_report
from .capture import DEFAULT_MAX_REPEATS, Recorder
from .capture.cellrun import cell_number, compile_cell, run_compiled
from .capture.compat import parser_actions
from .capture.session import Session
from .views.display import show_report
from .views.escape import terminal_text


@magics_class
class AutogradMagic(Magics):
    """Holds the magics and their defaults (``%config AutogradMagic.<trait> = ...``)."""

    max_nodes = Int(DEFAULT_MAX_NODES, help="Nodes drawn per graph before the rest is left out.").tag(config=True)
    max_repeats = Int(DEFAULT_MAX_REPEATS, help="Ops recorded in detail per call site.").tag(config=True)
    view = Enum(["auto", "widget", "html", "text"], "auto",
                help="What to display: the widget (auto in Jupyter), static HTML, or text.").tag(config=True)
    graph = Bool(True, help="Draw graphs (turn off with --no-graph).").tag(config=True)
    quiet = Bool(False, help="Display nothing (the report is still stored with -o).").tag(config=True)
    gradcheck = Bool(False, help="Compare each custom autograd.Function's backward with finite differences "
                                 "(runs its forward again on float64 copies).").tag(config=True)
    every_step = Bool(False, help="Watch every step of a training loop (slower): by default a loop with a torch "
                                  "optimizer runs unwatched once its first steps were recorded.").tag(config=True)
    depth = Int(None, allow_none=True,
                help="Draw nn.Modules nested deeper than this many levels as one node each.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.session = Session()  # what is remembered across cells (weakly: no tensor kept alive)

    @no_var_expand
    @magic_arguments()
    @argument("-o", "--out", metavar="NAME", help="Store the Report in the user namespace as NAME.")
    @argument("-q", "--quiet", action="store_true", default=None, help="Display nothing.")
    @argument("--no-graph", action="store_true", help="Skip the graph (faster for huge cells).")
    @argument("--max-nodes", type=int, metavar="N", help="Draw at most N nodes per graph (default 150).")
    @argument("--depth", type=int, metavar="N",
              help="Fold nn.Modules deeper than N levels into one node each (1: model's children).")
    @argument("--view", choices=["auto", "widget", "html", "text"], help="Force one view.")
    @argument("--text", action="store_true", help="Same as --view text.")
    @argument("--torchviz", action="store_true", help="Also show torchviz's own drawing of the graph.")
    @argument("--save", metavar="PATH", help="Write the report to PATH (.json, .html or .svg).")
    @argument("--gradcheck", action="store_true", default=None,
              help="After the cell, compare each custom autograd.Function's backward with finite differences "
                   "(calls its forward again on float64 copies of inputs of at most 1,000 elements).")
    @argument("--every-step", action="store_true", default=None,
              help="Watch every step of a training loop, not only the first ones (slower; to find a problem "
                   "that appears late in a loop).")
    @line_cell_magic
    def autograd(self, line: str = "", cell: str | None = None) -> Any:
        """Run a cell (or one statement) as usual and show what autograd did.

        Shows the computational graph with your variable names and the line
        that made each node, every variable's grad_fn, the gradients after
        backward(), and plain-language diagnostics for aliasing, detached
        graphs and autograd errors.

        Examples::

            %load_ext autograd_magic

            %%autograd
            x = torch.tensor([5.], requires_grad=True)
            z = (2 * x) ** 2
            z.backward()

            %%autograd -o rep --max-nodes 50
            loss = model(batch).sum()
            loss.backward()

            %%autograd --depth 1        # each nn.Module is a box; model.0, model.1, ... one node each
            loss = model(batch).sum()

            %%autograd --gradcheck      # is MyFn's backward right? (its forward runs again, on float64 copies)
            y = MyFn.apply(x)

            %%autograd --every-step     # a training loop watched at every step, not only its first ones
            for step in range(1000):
                ...

            %autograd y = x.detach()      # one statement

            %config AutogradMagic.view = 'text'
        """
        __tracebackhide__ = True  # noqa: F841 - keep tracebacks on the user's lines
        assert self.shell is not None  # a Magics registered by load_ipython_extension always has one
        args, statement = self._parse(line, cell)
        source = cell if cell is not None else statement
        number = cell_number(self.shell)
        compiled = compile_cell(self.shell, source, number)
        recorder = Recorder(
            source=source if _same_lines(source, compiled.source) else compiled.source,
            filename=compiled.filename,
            namespace=self.shell.user_ns,
            first_line=2 if cell is not None else 1,
            max_repeats=self.max_repeats,
            session=self.session,
            cell=number,
            torchviz=args.torchviz,
            gradcheck=self.gradcheck if args.gradcheck is None else args.gradcheck,
            leave_loops=not (self.every_step if args.every_step is None else args.every_step),
        )
        try:
            with recorder:
                value = run_compiled(self.shell, compiled, between=recorder.between_statements)
        except BaseException:
            self._present(recorder, args)
            raise
        self._present(recorder, args)
        return value

    def _parse(self, line: str, cell: str | None) -> tuple[Any, str]:
        try:
            # the options, and the words after them (a %autograd statement); IPython 8 has no partial parse
            parser = self.autograd.parser
            args, extra = parser.parse_known_args(_words(line, parser))
        except UsageError as error:
            raise UsageError(f"{error}\n{_usage(self.autograd)}") from None
        statement = _statement_text(line, getattr(self.autograd, "parser", None)) if extra else ""
        if statement.startswith("-"):
            raise UsageError(f"unrecognized arguments: {statement.split()[0]}\n{_usage(self.autograd)}")
        if cell is not None and statement:
            raise UsageError(f"unrecognized arguments: {statement}\n{_usage(self.autograd)}")
        if cell is None and not statement.strip():
            raise UsageError("%autograd needs a statement to run, or use %%autograd on a cell.\n"
                             + _usage(self.autograd))
        if args.max_nodes is not None and args.max_nodes < 1:
            raise UsageError(f"--max-nodes must be a positive number.\n{_usage(self.autograd)}")
        if args.depth is not None and args.depth < 0:
            raise UsageError(f"--depth must be 0 or more.\n{_usage(self.autograd)}")
        return args, statement

    def _present(self, recorder: Recorder, args: Any) -> None:
        """Build and show the report; never let our failure reach the user's cell."""
        try:
            if recorder.trace is None or self.shell is None:
                return
            graph = self.graph and not args.no_graph
            depth = args.depth if args.depth is not None else self.depth
            trace, max_nodes = recorder.trace, args.max_nodes or self.max_nodes
            report = build_report(trace, max_nodes=max_nodes, graphs=graph, depth=depth)
            report.hints.extend(f"autograd_magic failed while {what}; the report may be incomplete."
                                for what in dict.fromkeys(internal.take_failures()))
            if args.out:
                self.shell.user_ns[args.out] = report
            if args.save:
                _save(report, args.save)
            quiet = self.quiet if args.quiet is None else args.quiet
            if not quiet:
                view = "text" if args.text else args.view or self.view
                show_report(report, view=view, shell=self.shell, torchviz=args.torchviz,
                            refold=lambda folds: build_report(trace, max_nodes=max_nodes, graphs=graph,
                                                              depth=depth, folds=folds))
        except Exception:
            internal.report_failure("showing the report")
            print("autograd_magic: could not show the report (internal error); the cell itself ran normally.")


def _save(report: Any, path: str) -> None:
    try:
        report.save(path)
    except (ValueError, OSError) as error:  # a bad path or suffix must not hide the report
        print(terminal_text(f"autograd_magic: could not save the report to {path}: {error}"))


_SHELL_WORD = re.compile(r"""(?:"[^"]*"|'[^']*'|[^\s"']+)+""")


def _words(line: str, parser: Any) -> list[str]:
    """The options' words as a shell reads them (`--save "my report.html"`: one path, quotes removed,
    backslashes kept for Windows paths), then the statement's words as IPython splits them."""
    options, statement = _split_options(line, parser)
    return [_unquote(word) for word in options] + (arg_split(statement) if statement else [])


def _unquote(word: str) -> str:
    lexer = shlex.shlex(word, posix=True)
    lexer.whitespace_split, lexer.escape, lexer.commenters = True, "", ""
    try:
        return "".join(lexer)
    except ValueError:  # an unpaired quote: the word as typed
        return word


def _usage(magic: Any) -> str:
    parser = getattr(magic, "parser", None)
    text = parser.format_usage() if parser is not None else "%autograd [options]"
    return "usage: " + " ".join(text.replace("::", " ").split())


def _statement_text(line: str, parser: Any) -> str:
    """The statement after the options, exactly as typed (the parser's tokens lose spacing and quotes)."""
    return _split_options(line, parser)[1]


def _split_options(line: str, parser: Any) -> tuple[list[str], str]:
    """The leading option words (with their values) as typed, and the statement after them."""
    actions = parser_actions(parser)
    known = {opt for action in actions for opt in action.option_strings}
    takes_value = {opt for action in actions if action.nargs != 0 for opt in action.option_strings}
    words: list[str] = []
    rest = line.lstrip()
    while rest.startswith("-"):
        found = _SHELL_WORD.match(rest)
        word = found.group() if found else rest
        if word.split("=", 1)[0] not in known:
            break  # an unknown option stays in the statement, where `_parse` rejects it
        words.append(word)
        rest = rest[len(word):].lstrip()
        value = _SHELL_WORD.match(rest) if word in takes_value else None
        if value:  # `-o NAME`: its value is an option word too (`--save=PATH` is one word)
            words.append(value.group())
            rest = rest[value.end():].lstrip()
    return words, rest.rstrip()


def _same_lines(a: str, b: str) -> bool:
    return len(a.splitlines()) == len(b.splitlines())
