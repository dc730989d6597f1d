"""Diagnostics: one small pure function per kind, all listed in `CHECKS`.

Each check reads the `Trace` (and the names given to its tensors) and returns
`Diagnostic`s. Adding a kind means adding one function here or in a
module under ``checks/``, and its tests.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import internal
from ..report.model import SEVERITIES, Diagnostic
from ..trace.events import Trace
from .checks.backward import check_backward_non_scalar, check_backward_twice
from .checks.cuts import check_graph_break, check_no_gradient
from .checks.errors import (
    check_exception,
    check_leaf_inplace,
    check_numpy_requires_grad,
    check_requires_grad_int,
    check_requires_grad_nonleaf,
)
from .checks.flow import check_eval_keeps_grad, check_history_growing, check_nonleaf_grad
from .checks.gradcheck import check_gradcheck
from .checks.grads import check_grad_accumulated, check_grad_summed, check_saved_tensor_mutated
from .checks.inplace import check_inplace_saved_tensor
from .checks.memory import check_alias_write, check_shared_memory
from .checks.nonfinite import check_non_finite
from .checks.provenance import check_backward_no_grad_fn
from .checks.saved import check_backward_memory
from .checks.training import (
    check_constant_loss,
    check_exploding_gradients,
    check_never_gets_gradient,
    check_vanishing_gradients,
)
from .naming import Names

Check = Callable[[Trace, Names], list[Diagnostic]]

CHECKS: dict[str, Check] = {
    "alias-write": check_alias_write,
    "shared-memory": check_shared_memory,
    "graph-break": check_graph_break,
    "no-gradient": check_no_gradient,
    "backward-no-grad-fn": check_backward_no_grad_fn,
    "backward-twice": check_backward_twice,
    "backward-non-scalar": check_backward_non_scalar,
    "inplace-saved-tensor": check_inplace_saved_tensor,
    "saved-tensor-mutated": check_saved_tensor_mutated,
    "leaf-inplace": check_leaf_inplace,
    "nonleaf-grad": check_nonleaf_grad,
    "grad-accumulated": check_grad_accumulated,
    "grad-summed": check_grad_summed,
    "requires-grad-int": check_requires_grad_int,
    "numpy-requires-grad": check_numpy_requires_grad,
    "requires-grad-nonleaf": check_requires_grad_nonleaf,
    "history-growing": check_history_growing,
    "eval-keeps-grad": check_eval_keeps_grad,
    "exception": check_exception,
    "exploding-gradients": check_exploding_gradients,
    "vanishing-gradients": check_vanishing_gradients,
    "never-gets-gradient": check_never_gets_gradient,
    "constant-loss": check_constant_loss,
    "gradcheck": check_gradcheck,
    "non-finite": check_non_finite,
    "backward-memory": check_backward_memory,
}
TRAINING_KINDS = frozenset({"exploding-gradients", "vanishing-gradients", "never-gets-gradient", "constant-loss"})


def analyze(trace: Trace, names: Names) -> list[Diagnostic]:
    """Run every check; errors first, then warnings, then notes, each by line."""
    found: list[Diagnostic] = []
    for kind, check in CHECKS.items():
        try:
            found.extend(check(trace, names))
        except Exception:  # one broken check must not cost the user the rest of the report
            internal.report_failure(f"checking for {kind}")
    found = _dedupe(found)
    if any(d.severity == "error" and d.kind != "exception" for d in found):
        found = [d for d in found if d.kind != "exception"]  # a specific explanation replaces the generic one
    return sorted(found, key=lambda d: (SEVERITIES.index(d.severity), d.line or 0))


def _dedupe(found: list[Diagnostic]) -> list[Diagnostic]:
    """One diagnostic per kind, line and names: a loop repeats the same finding."""
    seen: set[tuple[str, int | None, tuple[str, ...]]] = set()
    out = []
    for diag in found:
        key = (diag.kind, diag.line, diag.names)
        if key not in seen:
            seen.add(key)
            out.append(diag)
    return out
