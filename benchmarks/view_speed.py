"""How long from running a cell to a ready view, and how big the output is (a script, not a test).

    python benchmarks/view_speed.py [--repeat N]

For each case: the plain cell, the cell under ``%%autograd -q`` (capture and
report), and the view (widget payload with every graph rendered to SVG, and the
output bundle with full text/plain and text/html). Graphviz's SVG cache is
cleared before every view so layout is always included. Targets (issue 4):
seed cell end to end <= 150 ms; a 2,000-op chain and a 20-layer MLP training
step <= 1 s; a 100,000-op cell <= 3 s with output <= 2 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from autograd_magic.views import graph as graph_view
from autograd_magic.views.graph import find_renderer

SEED = """x = torch.tensor([5.], requires_grad = True)
y = torch.tensor([7.])
y.requires_grad = True
var1 = 2*x
var2 = x+y
z = var2 - var1
z.backward()
a = torch.rand(10,3, requires_grad = True)
b = torch.rand(3,5)
b.requires_grad = True
c = torch.norm(torch.sin(a) @ torch.pow(b,2))
c.backward()"""

CHAIN_2000 = """x = torch.rand(3, 3, requires_grad=True)
t = x
for i in range(1000):
    t = t * 1.0001 + 0.0001
t.sum().backward()"""

MLP_20 = """torch.manual_seed(0)
model = torch.nn.Sequential(*[m for _ in range(20) for m in (torch.nn.Linear(64, 64), torch.nn.ReLU())])
opt = torch.optim.SGD(model.parameters(), lr=0.01)
xb = torch.randn(32, 64)
yb = torch.randn(32, 64)
loss = torch.nn.functional.mse_loss(model(xb), yb)
opt.zero_grad()
loss.backward()
opt.step()"""

OPS_100K = """x = torch.rand(3, 3, requires_grad=True)
t = x
for i in range(50000):
    t = t * 1.0001 + 0.0001
t.sum().backward()"""


@dataclass(frozen=True)
class Case:
    name: str
    cell: str
    limit_s: float
    max_bytes: int | None = None


CASES = (
    Case("seed cell (In[17]-[24])", SEED, 0.150),
    Case("2,000-op chain", CHAIN_2000, 1.0),
    Case("20-layer MLP training step", MLP_20, 1.0),
    Case("100,000-op cell", OPS_100K, 3.0, 2 * 1024 * 1024),
)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_cell(shell: InteractiveShell, source: str) -> None:
    with capture_output():
        result = shell.run_cell(source, store_history=False)
    if result.error_in_exec is not None:
        raise result.error_in_exec


def build_view(report: Any) -> int:
    """The widget with its payload and the bundle a frontend receives; returns the output's size in bytes."""
    from autograd_magic.views.widget import AutogradView

    graph_view._svg_cache.clear()  # always include layout
    view = AutogradView(report)
    data, _ = view._repr_mimebundle_()
    state = json.dumps(view.report, allow_nan=False)
    return len(state.encode()) + sum(len(str(v).encode()) for v in data.values())


def measure(shell: InteractiveShell, case: Case, repeat: int) -> dict[str, float]:
    return measure_cell(shell, case.cell, "", repeat)


def measure_cell(shell: InteractiveShell, cell: str, options: str, repeat: int) -> dict[str, float]:
    """Medians of the plain cell, the cell under ``%%autograd -q OPTIONS``, and building its view."""
    plain, captured, view, size = [], [], [], 0
    for _ in range(repeat):
        shell.run_cell("import torch", store_history=False)
        plain.append(timed(lambda: run_cell(shell, cell))[0])
        captured.append(timed(lambda: run_cell(shell, f"%%autograd -q -o _bench {options}\n" + cell))[0])
        seconds, size = timed(lambda: build_view(shell.user_ns["_bench"]))
        view.append(seconds)
    return {"plain": statistics.median(plain), "capture": statistics.median(captured),
            "view": statistics.median(view), "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext autograd_magic", store_history=False)
    shell.run_cell("import torch\ntorch.set_num_threads(1)", store_history=False)
    print(f"renderer: {find_renderer() or 'none (DOT source only)'}; medians of {args.repeat} runs")
    print(f"{'case':30} {'plain':>8} {'capture':>8} {'view':>8} {'total':>8} {'ratio':>6} {'output':>9}  target")
    for case in CASES:
        repeat = args.repeat if case.limit_s < 3 else max(1, args.repeat // 2)
        m = measure(shell, case, repeat)
        total = m["capture"] + m["view"]
        ok = total <= case.limit_s and (case.max_bytes is None or m["bytes"] <= case.max_bytes)
        target = f"<= {case.limit_s * 1000:.0f} ms" + (f", <= {case.max_bytes // 1024} KiB" if case.max_bytes else "")
        print(f"{case.name:30} {m['plain'] * 1000:7.0f}ms {m['capture'] * 1000:7.0f}ms {m['view'] * 1000:7.0f}ms "
              f"{total * 1000:7.0f}ms {total / m['plain']:5.1f}x {m['bytes'] / 1024:7.0f}KiB  "
              f"{target}: {'holds' if ok else 'FAILS'}")
    print("capture = the cell under %%autograd -q (recording and report); view = widget payload + bundle, SVG included;"
          " ratio = total / plain")


if __name__ == "__main__":
    main()
