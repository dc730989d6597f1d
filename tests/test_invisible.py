"""Invisible observation: nothing the recorder does may be seen by the cell.

Each test runs the same code plain and under ``%%autograd`` and compares what the
user's program can observe: hook and mode counters, values, exceptions, warnings,
liveness. One test per class of leak (issue 9), so that fixing an example without
fixing the class shows up here.
"""

from __future__ import annotations

import gc
import re
import sys
import warnings
from typing import Any

import pytest
import torch
from conftest import run


def both(ip: Any, setup: str, body: str, probe: str) -> tuple[Any, Any]:
    """Run ``setup`` then ``body`` plain, then again under the magic; return ``eval(probe)`` after each."""
    outcomes = []
    for prefix in ("", "%%autograd -q\n"):
        ip.reset(new_session=False)
        run(ip, "import torch\nimport numpy as np\ntorch.manual_seed(0)")
        assert run(ip, setup).error is None
        result = run(ip, prefix + body)
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        try:
            seen = ip.ev(probe)
        except Exception as failure:  # the probe itself failing is an observable difference too
            seen = f"probe failed: {type(failure).__name__}: {failure}"
        outcomes.append((error, seen))
    return outcomes[0], outcomes[1]


# -- 1. saved tensors are never unpacked by us --------------------------------------------------------
PACK_STORE = """
store = {}
packs, unpacks = [], []
def pack(t):
    packs.append(1)
    store[len(packs)] = t.clone()
    return len(packs)
def unpack(k):
    unpacks.append(1)
    return store.pop(k)
x = torch.randn(4, requires_grad=True)
"""


def test_user_saved_tensor_hooks_run_as_often_as_plain(ip: Any) -> None:
    body = ("with torch.autograd.graph.saved_tensors_hooks(pack, unpack):\n"
            "    y = (x * x).sin().sum()\ny.backward()")
    plain, magic = both(ip, PACK_STORE, body, "(len(packs), len(unpacks), x.grad.tolist())")
    assert plain[0] is None and magic == plain


def test_non_reentrant_checkpoint_recomputes_as_often_as_plain(ip: Any) -> None:
    setup = ("from torch.utils.checkpoint import checkpoint\ncalls = []\n"
             "def block(t):\n    calls.append(1)\n    return (t * 2).sin().cos()\n"
             "x = torch.randn(5, requires_grad=True)")
    body = "y = checkpoint(block, x, use_reentrant=False).sum()\ny.backward()"
    plain, magic = both(ip, setup, body, "(len(calls), x.grad.tolist())")
    assert plain[0] is None and magic == plain


def test_saved_tensors_under_user_hooks_are_said_not_shown(ip: Any) -> None:
    run(ip, PACK_STORE)
    run(ip, "%%autograd -q -o rep\nwith torch.autograd.graph.saved_tensors_hooks(pack, unpack):\n"
            "    y = (x * x).sin().sum()\ny.backward()")
    saved = [s for g in ip.user_ns["rep"].graphs for n in g.nodes for s in n.saved]
    assert saved and all("hook" in s for s in saved), saved


# -- 2. no read of ours may block ---------------------------------------------------------------------
MARK_DIRTY = """
class MyAdder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        a.add_(b)
        ctx.mark_dirty(a)
        return a
    @staticmethod
    def backward(ctx, grad):
        return grad, grad
a = torch.ones(3, requires_grad=True)
b = torch.ones(3, requires_grad=True)
"""


def test_custom_function_marking_a_view_dirty_does_not_hang(ip: Any) -> None:
    body = "out = MyAdder.apply(a.clone().view_as(a), b)\nout.sum().backward()"
    plain, magic = both(ip, MARK_DIRTY, body, "(out.tolist(), a.grad.tolist(), b.grad.tolist())")
    assert plain[0] is None and magic == plain


# -- 3. one odd object in the namespace costs only its own description ------------------------------
def test_uninitialized_lazy_module_in_the_namespace_does_not_stop_the_cell(ip: Any) -> None:
    run(ip, "m = torch.nn.LazyLinear(3)")
    result = run(ip, "%%autograd -q\nran = (torch.ones(2) * 2).tolist()")
    assert result.error is None and ip.user_ns["ran"] == [2.0, 2.0]


# -- 4. the user's own modes and subclasses see only the user's calls --------------------------------
FUNCTION_MODE = """
from torch.overrides import TorchFunctionMode
class Count(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(getattr(func, '__name__', str(func)))
        return func(*args, **(kwargs or {}))
"""

BODY = ("x = torch.randn(3, requires_grad=True)\ny = (x * 2).sin()\nz = y.sum()\nz.backward()\n"
        "g = x.grad.clone()")


def test_a_user_function_mode_opened_earlier_sees_the_same_calls(ip: Any) -> None:
    setup = FUNCTION_MODE + "counter = Count()\ncounter.__enter__()"
    try:
        plain, magic = both(ip, setup, BODY, "list(counter.calls)")
    finally:
        while torch._C._len_torch_function_stack() > 0:
            torch._C._pop_torch_function_stack()
    assert plain[0] is None and magic == plain


def test_a_user_function_mode_inside_the_cell_sees_the_same_calls(ip: Any) -> None:
    body = "with Count() as counter:\n" + "\n".join("    " + line for line in BODY.splitlines())
    plain, magic = both(ip, FUNCTION_MODE, body, "list(counter.calls)")
    assert plain[0] is None and magic == plain


DISPATCH_MODE = """
from torch.utils._python_dispatch import TorchDispatchMode
class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))
"""


def test_a_user_dispatch_mode_sees_the_same_ops(ip: Any) -> None:
    body = "with Ops() as seen:\n" + "\n".join("    " + line for line in BODY.splitlines())
    plain, magic = both(ip, DISPATCH_MODE, body, "list(seen.ops)")
    assert plain[0] is None and magic == plain


SUBCLASS = """
calls = []
class Logged(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        calls.append(getattr(func, '__name__', str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})
"""


def test_a_logging_tensor_subclass_sees_the_same_calls(ip: Any) -> None:
    body = ("x = torch.randn(3).as_subclass(Logged).requires_grad_()\ny = (x * 2).sin().sum()\ny.backward()\n"
            "n = len(calls)")
    plain, magic = both(ip, SUBCLASS, body, "list(calls)")
    assert plain[0] is None and magic == plain


HOOKS = """
seen = []
x = torch.randn(3, requires_grad=True)
x.register_hook(lambda g: seen.append('tensor'))
x.register_post_accumulate_grad_hook(lambda p: seen.append('post'))
"""


def test_tensor_hooks_run_as_often_as_plain(ip: Any) -> None:
    body = ("h = x * 2\nh.register_hook(lambda g: seen.append('inner'))\nh.grad_fn.register_hook("
            "lambda gi, go: seen.append('node'))\nfor _ in range(3):\n    (h * h).sum().backward(retain_graph=True)")
    plain, magic = both(ip, HOOKS, body, "list(seen)")
    assert plain[0] is None and magic == plain


# -- 5/6. nothing kept alive, also after an error ----------------------------------------------------
def test_a_failing_cell_keeps_no_tensor_alive(ip: Any) -> None:
    import weakref

    result = run(ip, "%%autograd -q\nx = torch.ones(1000, 3)\nw = __import__('weakref').ref(x)\ny = x @ x")
    assert result.error is not None
    import sys

    sys.last_traceback = getattr(sys, "last_traceback", None)  # as IPython leaves it
    ref = ip.user_ns["w"]
    assert isinstance(ref, weakref.ref)
    del ip.user_ns["x"]
    gc.collect()
    assert ref() is None


# -- 7. the user's function is never called twice -----------------------------------------------------
RAISING = """
runs = []
class Bad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t * 2
    @staticmethod
    def backward(ctx, g):
        runs.append(1)
        raise ValueError('no backward')
x = torch.ones(2, requires_grad=True)
"""


def test_a_failing_backward_runs_once_per_call(ip: Any) -> None:
    body = ("for _ in range(12):\n    try:\n        Bad.apply(x).sum().backward()\n"
            "    except ValueError:\n        pass")
    plain, magic = both(ip, RAISING, body, "len(runs)")
    assert plain == (None, 12) and magic == plain


# -- 8. the line magic runs the statement as written -------------------------------------------------
def test_line_magic_keeps_the_statement_text(ip: Any) -> None:
    result = run(ip, '%autograd -q print("two  spaces")')
    assert result.stdout == "two  spaces\n"


# -- 9. top-level await and the shell's interactivity setting -----------------------------------------
def test_top_level_await_runs(ip: Any) -> None:
    result = run(ip, "%%autograd -q\nimport asyncio\nawait asyncio.sleep(0)\nv = torch.ones(1) * 4")
    assert result.error is None, result.error
    assert ip.user_ns["v"].item() == 4


@pytest.mark.parametrize("mode", ["all", "last_expr_or_assign", "none"])
def test_ast_node_interactivity_is_respected(ip: Any, mode: str) -> None:
    body = "a = torch.ones(1)\na * 2\nb = a * 3\nb * 2" if mode == "all" else "a = torch.ones(1)\na * 2\nb = a * 3"
    old = ip.ast_node_interactivity
    ip.ast_node_interactivity = mode
    try:
        plain = run(ip, body)
        magic = run(ip, "%%autograd -q\n" + body)
    finally:
        ip.ast_node_interactivity = old
    shown = [([b.get("text/plain") for b in r.bundles], re.sub(r"Out\[\d+\]", "Out[n]", r.stdout))
             for r in (plain, magic)]
    assert shown[0] == shown[1]
    if mode == "all":
        assert shown[0][1].count("Out[n]") == 2  # the test sees what the shell displays


# -- 10. tracebacks, the debugger and warnings point at the user's code -------------------------------
def test_a_torch_error_shows_the_cell_line_once(ip: Any) -> None:
    run(ip, "%%autograd -q\nt = torch.ones(2, 3)\nt @ t")
    import sys

    frames = []
    tb = sys.last_traceback
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    cell_frames = [f for f in frames if f[0].startswith("<ipython-input") or "ipykernel" in f[0]
                   or f[0].startswith("/tmp/ipykernel")]
    assert len(cell_frames) <= 1 or len({f[1] for f in cell_frames}) == len(cell_frames), frames
    assert not any(f[2] == "_call" for f in frames), frames  # our per-site call function is not a frame


def test_the_debugger_starts_in_a_frame_with_the_users_locals(ip: Any) -> None:
    run(ip, "%%autograd -q\nt = torch.ones(2, 3)\nt @ t")
    import sys

    tb = sys.last_traceback
    last_user = None
    while tb is not None:
        if "autograd_magic" not in tb.tb_frame.f_code.co_filename and "torch" not in tb.tb_frame.f_code.co_filename:
            last_user = tb.tb_frame
        tb = tb.tb_next
    assert last_user is not None and "t" in last_user.f_locals


def test_python_dispatched_warnings_name_the_cell_line(ip: Any) -> None:
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n    s = torch.nn.functional.softmax(torch.ones(2, 2))\n"
            "where = [(w.filename, w.lineno, str(w.message)) for w in caught]")
    run(ip, code)
    plain = ip.user_ns["where"]
    run(ip, "%%autograd -q\n" + code)
    magic = ip.user_ns["where"]
    assert plain and [(f.startswith("<ipython") or "ipykernel" in f, n, m) for f, n, m in magic] == \
        [(f.startswith("<ipython") or "ipykernel" in f, n, m) for f, n, m in plain]


def test_complex_gradients_make_no_warning_of_ours(ip: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(ip, "%%autograd -q -o rep\nz = torch.tensor([3 + 4j, 1 - 2j], requires_grad=True)\n"
                         "(z.abs() ** 2).sum().backward()")
    assert result.error is None and not result.stderr


# -- 11. torch.compile sees no change ----------------------------------------------------------------
def test_a_compiled_function_compiles_once(ip: Any) -> None:
    setup = ("import torch._dynamo\ntorch._dynamo.reset()\nfrom torch._dynamo.testing import CompileCounter\n"
             "cnt = CompileCounter()\nf = torch.compile(lambda t: torch.sin(t) * 2, backend=cnt)")
    body = "for i in range(20):\n    y = f(torch.ones(3) * i)"
    try:
        plain, magic = both(ip, setup, body, "cnt.frame_count")
    finally:
        torch._dynamo.reset()
    assert plain == (None, 1) and magic == plain


# -- 12. unusual tensors are described, not falsified --------------------------------------------------
def test_complex_gradient_norm_is_the_true_norm(ip: Any) -> None:
    run(ip, "%%autograd -q -o rep\nz = torch.tensor([3 + 4j, 1 - 2j, 6 + 7j], requires_grad=True)\n"
            "(z * z.conj()).real.sum().backward()")
    grad = ip.user_ns["z"].grad
    assert ip.user_ns["rep"].gradients["z"].norm == pytest.approx(float(torch.linalg.vector_norm(grad)))


def test_sparse_gradient_is_described(ip: Any) -> None:
    result = run(ip, "%%autograd -q -o rep\nemb = torch.nn.Embedding(10, 3, sparse=True)\n"
                     "out = emb(torch.tensor([1, 2, 1])).sum()\nout.backward()")
    assert result.error is None
    rep = ip.user_ns["rep"]
    row = rep.gradients["emb.weight"]
    dense = ip.user_ns["emb"].weight.grad.to_dense()
    assert row.shape == (10, 3) and row.norm == pytest.approx(float(dense.norm()))


def test_nested_tensor_is_described(ip: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own "nested tensors are in prototype" warning
        result = run(ip, "%%autograd -q -o rep\nnt = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)],"
                         " requires_grad=True)\nout = (nt * 2)")
    assert result.error is None
    assert "nt" in ip.user_ns["rep"].tensors


@pytest.mark.parametrize("line, printed", [
    ('%autograd print("a  b", "c")', "a  b c\n"),
    ("%autograd -q -o rep print('x   y')", "x   y\n"),
    ("%autograd --max-nodes 5 --text print('  lead')", "  lead\n"),
])
def test_line_magic_runs_the_exact_text_after_any_options(ip: Any, line: str, printed: str) -> None:
    result = run(ip, line)
    assert result.error is None and result.stdout.startswith(printed)


# -- the cell's number is the one IPython shows ---------------------------------------------------------
def test_a_failing_cell_is_named_by_its_own_number(ip: Any) -> None:
    result = run(ip, "%%autograd -q\nt = torch.ones(2, 3)\nt @ t")
    files = []
    tb = sys.last_traceback
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    numbers = {ip.compile._filename_map[f] for f in files if f in ip.compile._filename_map}
    assert numbers == {result.result.execution_count}


def test_earlier_cell_nodes_say_the_number_that_made_them(ip: Any) -> None:
    made = run(ip, "%%autograd -q\nx = torch.tensor([5.], requires_grad=True)\nvar1 = 2 * x")
    run(ip, "%%autograd -q -o rep\nz = var1 * 3\nz.backward()")
    cells = {n.cell for g in ip.user_ns["rep"].graphs for n in g.nodes if n.name == "var1"}
    assert cells == {made.result.execution_count}


def test_a_profiler_in_the_cell_records_the_same_ops(ip: Any) -> None:
    body = ("with torch.profiler.profile() as prof:\n" + "\n".join("    " + line for line in BODY.splitlines())
            + "\nnames = sorted(e.name for e in prof.events())")
    plain, magic = both(ip, "", body, "names")
    assert plain[0] is None and magic == plain


# -- saved-tensor-mutated speaks only when the saved bytes really changed (issue 10, item 1) -----------
@pytest.mark.parametrize("body", [
    "w = torch.randn(3, 3)\nxp = torch.randn(3, requires_grad=True)\nout = torch.nn.functional.linear(xp, w)\n"
    "out.sum().backward()",
    "y = torch.randn(4, dtype=torch.double, requires_grad=True)\nok = torch.autograd.gradcheck(torch.sin, (y,))",
    "m = torch.nn.Linear(3, 3)\nx = torch.randn(2, 3, requires_grad=True)\nm(x).pow(2).sum().backward()",
])
def test_saved_tensor_mutated_is_silent_when_nothing_changed(ip: Any, body: str) -> None:
    run(ip, "%%autograd -q -o rep\n" + body)
    assert "saved-tensor-mutated" not in [d.kind for d in ip.user_ns["rep"].diagnostics]


@pytest.mark.parametrize("body", [
    "a = torch.ones(3)\np = torch.ones(3, requires_grad=True)\ny = p * a\na.numpy()[0] = 5.0\ny.sum().backward()",
    "w = torch.randn(3, 3)\nxp = torch.randn(3, requires_grad=True)\nout = torch.nn.functional.linear(xp, w)\n"
    "w.numpy()[0, 1] += 1.0\nout.sum().backward()",  # saved as w.t(): the same bytes, seen through a transpose
])
def test_saved_tensor_mutated_still_sees_a_write_through_numpy(ip: Any, body: str) -> None:
    run(ip, "%%autograd -q -o rep\n" + body)
    assert "saved-tensor-mutated" in [d.kind for d in ip.user_ns["rep"].diagnostics]


def test_warnings_raised_during_backward_name_the_cell_line(ip: Any) -> None:
    code = ("import warnings\nmodel = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())\n"
            "model[0].register_full_backward_hook(lambda m, gi, go: None)\n"
            "with warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
            "    model(torch.ones(1, 2)).sum().backward()\nwhere = [(w.lineno, str(w.message)) for w in caught]\n"
            "files = [w.filename for w in caught]")
    run(ip, code)
    plain = ip.user_ns["where"]
    run(ip, "%%autograd -q\n" + code)
    # newer torch warns here (2.9 and later do: a full backward hook on a module whose input needs no grad);
    # 2.4 stays silent: then the recorded run must be silent too
    assert ip.user_ns["where"] == plain
    assert not any("autograd_magic" in f for f in ip.user_ns["files"])


def test_out_sharing_from_an_earlier_cell_is_a_note(ip: Any) -> None:
    run(ip, "%%autograd -q\na = torch.ones(2, 2)\nb = torch.ones(2, 2)\nc = torch.zeros(2, 2)\n"
            "d = torch.matmul(a, b, out=c)")
    run(ip, "%%autograd -q -o rep\ntorch.rand(2, 2, out=c)\nprint(d)")
    found = [d for d in ip.user_ns["rep"].diagnostics if d.kind == "alias-write"]
    assert found and all(d.severity == "note" for d in found)
    assert "out=" in found[0].message and "In [" in found[0].message
