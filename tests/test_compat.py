"""Every private name of torch or Python the package touches is touched in capture/compat.py only.

The scan reads the package's source (ast): an attribute ``x._name`` that is not the package's own
(``self._x``, a private attribute a module of ours defines), a single-underscore string looked up by
name (``getattr(node, "_raw_saved_" + slot)``) or naming one of compat's internals, an import from a
private module (``torch._C``) and the version-sensitive code attributes (``co_positions``) all count.
compat.py must list each one it uses in `INTERNALS`. A string that only names an op as recorded
(``op.func.startswith("_foreach")``) is data, not a touch.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import torch

from autograd_magic.capture import compat

PACKAGE = Path(compat.__file__).resolve().parent.parent
COMPAT = Path(compat.__file__).resolve()
_PRIVATE = re.compile(r"^_[A-Za-z][A-Za-z0-9_]*$")
_PROTOCOLS = re.compile(r"^_(repr|ipython)_\w*_$")  # IPython's display protocols are public API
VERSION_SENSITIVE = frozenset({"co_positions", "co_lines"})  # code-object details that came with 3.10/3.11


def _is_private(name: str) -> bool:
    return bool(_PRIVATE.match(name)) and not name.endswith("__") and not _PROTOCOLS.match(name)


def _own_members(tree: ast.AST) -> set[str]:
    """Private attributes this module defines itself: ``self._x = ...``, class-level names, slots."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                own.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "__slots__" for t in item.targets):
                    own.update(c.value for c in ast.walk(item.value) if isinstance(c, ast.Constant))
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    own.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    own.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    own.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return own


def _docstrings(tree: ast.AST) -> set[int]:
    """Docstrings, and the keys of compat's list of internals: text about names, not touches."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "INTERNALS":
            found.update(id(key) for key in getattr(node.value, "keys", ()))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


_LOOKUPS = frozenset({"getattr", "hasattr", "setattr", "delattr", "_lookup"})


def _looked_up(tree: ast.AST) -> set[int]:
    """The string constants inside the arguments of a lookup by name (``getattr(x, "_a" + b)``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _LOOKUPS:
            found.update(id(c) for arg in node.args for c in ast.walk(arg) if isinstance(c, ast.Constant))
    return found


def private_names(source: str, every_string: bool = False) -> dict[str, int]:
    """Each private name of someone else's the source touches -> the first line touching it.

    ``every_string``: count every single-underscore string (for compat.py, whose strings are all lookups).
    """
    tree = ast.parse(source)
    own, docs, looked_up = _own_members(tree), _docstrings(tree), _looked_up(tree)
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            receiver = node.value
            mine = (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")
                    or isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name)
                    and receiver.func.id == "super" or node.attr in own)
            if node.attr in VERSION_SENSITIVE or _is_private(node.attr) and not mine:
                names.append(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            internal = any(node.value.startswith(name) for name in compat.INTERNALS)
            if _is_private(node.value) and node.value not in own and (every_string or internal
                                                                      or id(node) in looked_up):
                names.append(node.value)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.extend(part for part in node.module.split(".") if _is_private(part))
        elif isinstance(node, ast.Import):
            names.extend(part for alias in node.names for part in alias.name.split(".") if _is_private(part))
        for name in names:
            found.setdefault(name, getattr(node, "lineno", 0))
    return found


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_but_compat_touches_a_private_name() -> None:
    outside = []
    for path in _package_files():
        if path == COMPAT:
            continue
        for name, line in private_names(path.read_text()).items():
            outside.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not outside, "private names outside capture/compat.py (move them there):\n" + "\n".join(outside)


def test_compat_lists_exactly_the_private_names_it_touches() -> None:
    used = set(private_names(COMPAT.read_text(), every_string=True)) - VERSION_SENSITIVE
    assert used == set(compat.INTERNALS), (f"used, not listed: {sorted(used - set(compat.INTERNALS))}; "
                                           f"listed, not used: {sorted(set(compat.INTERNALS) - used)}")


def test_the_scan_sees_each_kind_of_private_touch() -> None:
    source = ("import torch._dynamo\nfrom torch._C import _autograd\nimport sys\n"
              "class A:\n    def f(self, t, node):\n        self._mine = 1\n"
              "        return sys._getframe(1), t._version, getattr(node, '_saved_' + 'x'), self._mine,"
              " t.__class__, t._repr_html_, node.co_positions, '_raw_saved_self', op.startswith('_foreach')\n")
    assert set(private_names(source)) == {"_dynamo", "_C", "_getframe", "_version", "_saved_", "co_positions",
                                          "_raw_saved_self"}


def test_a_missing_internal_is_not_available_rather_than_a_guess() -> None:
    class Handle:  # a saved-tensor handle of a torch that does not say which hook packed it
        pass

    assert compat.saved_unpack_hook(Handle()) is compat.NOT_AVAILABLE
    assert compat.input_metadata(object()) is compat.NOT_AVAILABLE
    assert compat.forward_class(object()) is None
    assert not compat.NOT_AVAILABLE


def test_each_internal_this_torch_offers_is_found() -> None:
    """On the torch CI runs, feature detection finds what it has (a silent fallback would hide a move)."""
    a = torch.ones(2, requires_grad=True)
    node = (a * a).grad_fn
    assert compat.input_metadata(node) in ((((2,), torch.float32)), compat.NOT_AVAILABLE)
    assert compat.saved_slot_names(node) == ("other", "self")
    assert isinstance(compat.raw_saved(node, "self"), object)
    assert compat.len_function_stack() == 0
    assert compat.is_compiling() is False
    assert compat.profiler_enabled() is False


def test_a_node_keeps_its_key_when_torch_makes_its_python_wrapper_again() -> None:
    """torch < 2.10 drops a grad_fn's wrapper when the last reference goes: ids change and repeat."""
    a = torch.ones(2, requires_grad=True)
    b = a * 2
    key = compat.node_key(b.grad_fn)
    others = [(a * 3).grad_fn for _ in range(8)]  # likely to take the first wrapper's memory
    assert compat.node_key(b.grad_fn) == key
    assert all(compat.node_key(other) != key for other in others)


class _OldStyle(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        _OldStyle.seen = compat.function_of_forward(sys._getframe())
        return x * 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2


class _NewStyle(torch.autograd.Function):
    @staticmethod
    def forward(x: torch.Tensor, scale: float) -> torch.Tensor:
        frame = sys._getframe()
        _NewStyle.seen = compat.function_of_forward(frame), compat.apply_arguments(frame, _NewStyle)
        return x * scale

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def test_a_custom_function_is_found_from_its_forward_without_applys_frame() -> None:
    """torch 2.14 runs Function.apply in C++: the forward's frame alone tells the class and arguments."""
    x = torch.ones(2, requires_grad=True)
    _OldStyle.apply(x)
    _NewStyle.apply(x, 3.0)
    assert _OldStyle.seen is _OldStyle  # type: ignore[attr-defined]
    cls, (args, kwargs) = _NewStyle.seen  # type: ignore[attr-defined]
    assert cls is _NewStyle and args[0] is x and args[1] == 3.0 and kwargs == {}


def test_only_an_attribute_instruction_is_the_frames_own_attribute_access() -> None:
    frame = sys._getframe()
    here = compat.accesses_attribute(frame)  # this line calls: not an attribute access of its own
    assert here is False
