"""Execute demo.ipynb and save it with its outputs and widget state.

The saved notebook renders on GitHub and nbviewer without a kernel: every
``%%autograd`` output carries the static ``text/html`` report and the full
``text/plain`` one, and the interactive view's state is stored in the
notebook's metadata (``store_widget_state``).

Usage (from the repository root, after ``bash scripts/setup.sh``)::

    .venv/bin/python scripts/execute_demo.py                 # demo.ipynb in place
    .venv/bin/python scripts/execute_demo.py IN.ipynb OUT.ipynb

The kernel always runs this interpreter (``sys.executable``), whatever
kernelspecs the machine has, so the notebook is executed with the venv's
torch and autograd_magic.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
KERNEL_NAME = "python3"


def write_kernelspec(directory: Path, python: str = sys.executable) -> Path:
    """A ``python3`` kernelspec in ``directory/python3`` that starts ``python``."""
    spec_dir = directory / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def execute(source: Path, target: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """Run every cell of ``source`` in a fresh kernel and write the result to ``target``."""
    nb = nbformat.read(source, as_version=4)
    with tempfile.TemporaryDirectory(prefix="agm-kernels-") as kernels:
        write_kernelspec(Path(kernels))
        specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
        km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout,
            kernel_name=KERNEL_NAME,
            store_widget_state=True,
            record_timing=False,  # keeps the committed notebook's diffs to real changes
            resources={"metadata": {"path": str(source.resolve().parent)}},
        )
        client.execute()
    nbformat.write(nb, target)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=ROOT / "demo.ipynb")
    parser.add_argument("target", nargs="?", type=Path)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    args = parser.parse_args(argv)
    execute(args.source, args.target or args.source, timeout=args.timeout)
    print(f"executed {args.source} -> {args.target or args.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
