"""From a 6-layer nn.TransformerEncoder forward+backward cell to a ready view (a script, not a test).

    python benchmarks/model_view.py [--repeat N]

Times the plain cell, the cell under ``%%autograd -q`` (capture and report, modules
found from the stack), and the view (widget payload with every graph rendered to SVG
with its module clusters, and the bundle's full text and HTML), each with the whole
graph and with ``--depth 2`` (each encoder layer one node). Targets (issue 13):
capture + view <= 1.5 s, output <= 1 MB. Also a 200-step training loop, for the
per-step gradient norms (issue 13.2): its capture against the plain loop.
"""

from __future__ import annotations

import argparse

from IPython.core.interactiveshell import InteractiveShell
from view_speed import measure_cell

from autograd_magic.views.graph import find_renderer

TRANSFORMER_6 = """torch.manual_seed(0)
enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 6,
                                  enable_nested_tensor=False)
xb = torch.randn(8, 16, 64)
loss = enc(xb).pow(2).mean()
loss.backward()"""

TRAINING_200 = """torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                            torch.nn.Linear(64, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
xb, yb = torch.randn(64, 32), torch.randn(64, 1)
for step in range(200):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    opt.step()"""

CASES = (("6-layer TransformerEncoder", TRANSFORMER_6, ""),
         ("6-layer TransformerEncoder, --depth 2", TRANSFORMER_6, "--depth 2"),
         ("200-step training loop", TRAINING_200, ""))
LIMIT_S, MAX_BYTES = 1.5, 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext autograd_magic", store_history=False)
    shell.run_cell("import torch\ntorch.set_num_threads(1)", store_history=False)
    print(f"renderer: {find_renderer() or 'none (DOT source only)'}; medians of {args.repeat} runs")
    print(f"{'case':40} {'plain':>8} {'capture':>8} {'view':>8} {'total':>8} {'ratio':>6} {'output':>9}  target")
    for name, cell, options in CASES:
        m = measure_cell(shell, cell, options, args.repeat)
        total = m["capture"] + m["view"]
        ok = total <= LIMIT_S and m["bytes"] <= MAX_BYTES
        print(f"{name:40} {m['plain'] * 1000:7.0f}ms {m['capture'] * 1000:7.0f}ms {m['view'] * 1000:7.0f}ms "
              f"{total * 1000:7.0f}ms {total / m['plain']:5.1f}x {m['bytes'] / 1024:7.0f}KiB  "
              f"<= {LIMIT_S * 1000:.0f} ms, <= {MAX_BYTES // 1024} KiB: {'holds' if ok else 'FAILS'}")
    print("capture = the cell under %%autograd -q (recording and report); view = widget payload + bundle, SVG included;"
          " ratio = total / plain")


if __name__ == "__main__":
    main()
