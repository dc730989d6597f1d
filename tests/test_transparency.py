"""The first promise: under %%autograd a cell behaves exactly as it does plain."""

from __future__ import annotations

import gc
import re
import threading
import types
import weakref
from typing import Any

import pytest
import torch
from conftest import run
from seed_cells import SEED_CELLS

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
TENSOR_ATTRS = ("requires_grad", "is_leaf", "retains_grad")


def _state(ns: dict[str, Any]) -> dict[str, Any]:
    """Every tensor in the namespace: values, grad and autograd flags (grad_fn by class)."""
    out = {}
    for name, value in ns.items():
        if isinstance(value, torch.Tensor) and not name.startswith("_"):
            grad = value.grad if value.is_leaf else None
            out[name] = (
                value.detach().clone(),
                None if grad is None else grad.clone(),
                tuple(getattr(value, a) for a in TENSOR_ATTRS),
                type(value.grad_fn).__name__ if value.grad_fn is not None else None,
            )
    return out


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        va, ga, fa, fna = a[name]
        vb, gb, fb, fnb = b[name]
        assert torch.equal(va, vb), name
        assert (ga is None) == (gb is None), name
        assert ga is None or torch.equal(ga, gb), name
        assert fa == fb and fna == fnb, name


def _run_all(shell: Any, cells: list[str], prefix: str) -> list[tuple[str, str | None, str]]:
    shell.reset(new_session=False)
    outcomes = []
    for source in cells:
        result = run(shell, prefix + source)
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        stdout = re.sub(r"Out\[\d+\]", "Out[n]", result.stdout)  # prompt numbers differ between the two runs
        stdout = _ANSI.sub("", stdout).split("-" * 75)[0]  # the traceback's frames differ (the magic call frame)
        outcomes.append((stdout, error, repr(result.value)))
    return outcomes


def test_every_seed_cell_prints_returns_and_raises_the_same(shell: Any) -> None:
    cells = list(SEED_CELLS.values())
    plain = _run_all(shell, cells, "")
    plain_state = _state(shell.user_ns)
    magic = _run_all(shell, cells, "%%autograd\n")
    magic_state = _state(shell.user_ns)
    for number, p, m in zip(SEED_CELLS, plain, magic, strict=True):
        assert p == m, f"seed In[{number}] differs under the magic"
    _same_state(plain_state, magic_state)
    assert "dz_dx:  tensor([-1.])" in magic[list(SEED_CELLS).index(22)][0]
    assert magic[-1][1] is not None
    assert magic[-1][1].startswith("RuntimeError: element 0 of tensors does not require grad")


def test_random_stream_is_unchanged(ip: Any) -> None:
    run(ip, "torch.manual_seed(3)\n_ = torch.rand(2)")
    run(ip, "%%autograd\nw = torch.rand(4, requires_grad=True)\n(w * 2).sum().backward()\nafter = torch.rand(3)")
    magic = (ip.user_ns["w"].detach().clone(), ip.user_ns["after"].clone())
    run(ip, "torch.manual_seed(3)\n_ = torch.rand(2)")
    run(ip, "w = torch.rand(4, requires_grad=True)\n(w * 2).sum().backward()\nafter = torch.rand(3)")
    assert torch.equal(magic[0], ip.user_ns["w"].detach()) and torch.equal(magic[1], ip.user_ns["after"])


def test_last_expression_is_returned_as_out(ip: Any) -> None:
    result = run(ip, "%%autograd\nx = torch.ones(2)\nx * 3")
    assert torch.equal(result.value, torch.full((2,), 3.0))
    assert ip.user_ns["_"] is result.value


def test_trailing_semicolon_suppresses_out(ip: Any) -> None:
    run(ip, "%%autograd\nx = torch.ones(2)\nx * 3;")
    assert "x * 3" not in repr(ip.user_ns.get("_", None))
    result = run(ip, "%%autograd -q\n(torch.ones(1) * 7);")
    assert not any("text/plain" in b and "7." in b["text/plain"] for b in result.bundles)


@pytest.mark.parametrize("source", [
    "x * 3;", "x * 3", "x * 3;\n# done\n\n", "x * 3  # a note; not code", "y = 1; x * 3", 's = """\n;\n"""',
    "x * 3; # shh", "x * 3 ;\n    \n", "f(1,\n  2);", '"""a\n# b;"""', "", "x;\n#",
])
def test_semicolon_test_agrees_with_ipythons_own(source: str) -> None:
    """Ours skips tokenizing a long cell when its last line of code has no ';': the same answers."""
    from IPython.core.displayhook import DisplayHook

    from autograd_magic.capture.cellrun import _ends_in_semicolon

    assert _ends_in_semicolon(source) is bool(DisplayHook.semicolon_at_end_of_expression(source))


def test_exception_propagates_with_same_type_and_message(ip: Any) -> None:
    plain = run(ip, "t = torch.ones(2, 3)\nt @ t")
    magic = run(ip, "%%autograd\nt = torch.ones(2, 3)\nt @ t")
    assert type(magic.error) is type(plain.error)
    assert str(magic.error) == str(plain.error)
    assert magic.bundles, "the report of what ran is displayed before the error"


def test_syntax_error_is_reported_like_a_plain_cell(ip: Any) -> None:
    result = run(ip, "%%autograd\nx = (")
    assert isinstance(result.error, SyntaxError)


def test_ipython_syntax_lines_still_work(ip: Any) -> None:
    result = run(ip, "%%autograd\nv = %pwd\nw = torch.zeros(1)\nprint(type(v).__name__)")
    assert result.error is None and result.stdout.strip() == "str"


def test_no_strong_reference_survives_the_cell(ip: Any) -> None:
    run(ip, "%%autograd -o rep\nx = torch.randn(3, requires_grad=True)\ny = (x * 2).sum()\ny.backward()\n"
            "arr = x.detach().numpy()")
    refs = [weakref.ref(ip.user_ns[n]) for n in ("x", "y", "arr")]
    for name in ("x", "y", "arr"):
        del ip.user_ns[name]
    gc.collect()
    assert all(r() is None for r in refs), "a tensor outlived the names that held it"
    assert ip.user_ns["rep"].tensors["x"].shape == (3,)  # the report kept only plain data


def test_no_mode_left_after_an_exception(ip: Any) -> None:
    depth = torch._C._len_torch_function_stack()
    run(ip, "%%autograd\nx = torch.ones(1)\nraise ValueError('boom')")
    assert torch._C._len_torch_function_stack() == depth


def test_no_mode_left_after_keyboard_interrupt(ip: Any) -> None:
    depth = torch._C._len_torch_function_stack()
    result = run(ip, "%%autograd\nx = torch.ones(1, requires_grad=True)\ny = x * 2\nraise KeyboardInterrupt")
    assert isinstance(result.error, KeyboardInterrupt)
    assert torch._C._len_torch_function_stack() == depth


def test_a_mode_the_cell_left_open_stays_but_ours_is_gone(ip: Any) -> None:
    run(ip, "from torch.overrides import TorchFunctionMode\nclass Tag(TorchFunctionMode):\n"
            "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
            "        return func(*args, **(kwargs or {}))")
    depth = torch._C._len_torch_function_stack()
    run(ip, "%%autograd\nleft_open = Tag()\nleft_open.__enter__()\nx = torch.ones(2) * 2")
    try:
        assert torch._C._len_torch_function_stack() == depth + 1  # the user's mode, as in a plain run
        top = torch._C._pop_torch_function_stack()
        assert type(top).__name__ == "Tag"
    finally:
        while torch._C._len_torch_function_stack() > depth:
            torch._C._pop_torch_function_stack()


def test_no_hook_is_left_on_the_graph(ip: Any) -> None:
    run(ip, "%%autograd\nx = torch.ones(2, requires_grad=True)\nh = x * 3\nout = (h * h).sum()\n"
            "out.backward(retain_graph=True)")
    gc.collect()
    catchers = [o for o in gc.get_objects()
                if type(o) is types.FunctionType and o.__qualname__.endswith("_grad_catcher.<locals>.catch")]
    assert catchers == []
    result = run(ip, "x.grad = None\nout.backward()\nprint(x.grad)")
    assert result.error is None and "tensor([18., 18.])" in result.stdout


def test_threads_started_by_the_cell_run_normally(ip: Any) -> None:
    result = run(ip, "%%autograd\nimport threading\nres = []\n"
                     "t = threading.Thread(target=lambda: res.append((torch.ones(3) * 2).sum().item()))\n"
                     "t.start(); t.join()\nprint(res)")
    assert result.error is None and result.stdout.strip() == "[6.0]"
    assert threading.active_count() >= 1


def test_torch_compile_inside_the_cell_does_not_break(ip: Any) -> None:
    result = run(ip, "%%autograd\nf = torch.compile(lambda t: torch.sin(t) * 2 + 1, backend='eager')\n"
                     "x = torch.ones(3, requires_grad=True)\ny = f(x).sum()\ny.backward()\nprint(x.grad)")
    assert result.error is None, result.error
    expected = torch.cos(torch.ones(3)) * 2
    assert torch.allclose(ip.user_ns["x"].grad, expected)
    del ip.user_ns["f"]
    torch._dynamo.reset()  # drop dynamo's caches now: at interpreter exit they print a spurious KeyError


@pytest.mark.parametrize("source", [
    "w = torch.randn(3, requires_grad=True)\nfor _ in range(3):\n    (w * w).sum().backward()",
    "m = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\nfor _ in range(20):\n"
    "    opt.zero_grad()\n    m(torch.ones(4, 2)).pow(2).mean().backward()\n    opt.step()",
    "p = torch.ones(2, requires_grad=True)\ng, = torch.autograd.grad((p ** 3).sum(), p, create_graph=True)\n"
    "g.sum().backward()",
])
def test_values_and_gradients_match_a_plain_run(ip: Any, source: str) -> None:
    run(ip, "torch.manual_seed(1)")
    plain = run(ip, source)
    plain_state = _state(ip.user_ns)
    ip.reset(new_session=False)
    run(ip, "import torch\ntorch.manual_seed(1)")
    magic = run(ip, "%%autograd\n" + source)
    assert (plain.error is None) and (magic.error is None)
    _same_state(plain_state, _state(ip.user_ns))


def test_torch_warnings_name_the_cell_line_not_our_code(ip: Any) -> None:
    run(ip, "x = torch.ones(2, requires_grad=True)\ny = x * 2")
    code = "import warnings\nwith warnings.catch_warnings(record=True) as caught:\n" \
           "    warnings.simplefilter('always')\n    y.grad\nwhere = [(w.filename, w.lineno) for w in caught]"
    run(ip, code)
    plain = ip.user_ns["where"]
    run(ip, "%%autograd -q\n" + code)
    magic = ip.user_ns["where"]
    assert len(plain) == len(magic) == 1
    assert "autograd_magic" not in magic[0][0] and magic[0][1] == plain[0][1]
