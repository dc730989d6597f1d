"""Peak memory of a big backward, plain vs under %%autograd (a benchmark, not a test).

Each run is a fresh Python process (peak RSS only grows within a process):

    python benchmarks/memory.py [--elements 100000000]

Prints the peak RSS of each and the ratio; the target is <= 1.05 (no copy of a user tensor).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CELL = "x = torch.randn({n}, requires_grad=True)\nx.sum().backward()\ng = x.grad.norm().item()"
SCRIPT = """
import resource, sys
import torch
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_cell("import torch", store_history=False)
if sys.argv[1] == "magic":
    shell.run_cell("%load_ext autograd_magic", store_history=False)
    shell.run_cell("%%autograd -q -o rep\\n" + sys.argv[2], store_history=True)
else:
    shell.run_cell(sys.argv[2], store_history=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(kind: str, cell: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, kind, cell], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=10**8)
    args = parser.parse_args()
    cell = CELL.format(n=args.elements)
    plain = peak_kib("plain", cell)
    magic = peak_kib("magic", cell)
    print(f"{args.elements:,}-element backward: plain {plain / 1024:.0f} MiB, "
          f"%%autograd {magic / 1024:.0f} MiB, ratio {magic / plain:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
