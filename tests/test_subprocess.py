"""Terminal IPython: cells piped into `python -m IPython` get the plain-text report.

A piped cell magic ends at two blank lines, as when typed at the simple prompt.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CELLS = """\
%load_ext autograd_magic
import torch
%%autograd
x = torch.tensor([5.], requires_grad=True)
y = torch.tensor([7.], requires_grad=True)
z = (x + y) - 2 * x
z.backward()


%%autograd
v = torch.tensor([1, 2, 3, 4])
w = v
w[0] = 5


print('after', x.grad.item())
exit
"""


def test_terminal_ipython_shows_the_text_report(tmp_path: Path) -> None:
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--simple-prompt", "--colors=nocolor", "--no-banner",
         "--TerminalInteractiveShell.confirm_exit=False"],
        input=CELLS, capture_output=True, text=True, timeout=180, env=env, cwd=Path(__file__).parent.parent,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "Graph 1: root z (backward at line 4)" in out  # the body's numbering, as tracebacks count
    assert "x AccumulateGrad" in out and "y AccumulateGrad" in out
    assert "x: [-1]" in out
    assert "[alias-write] line 3: w[0] = 5" in out
    assert "after -1.0" in out
    assert "Traceback" not in out + done.stderr


IMPORTS = """\
import sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
if sys.argv[1] == "kernel":
    shell.kernel = object()  # what ipykernel's shell has: a frontend that can show widgets
shell.run_cell("%load_ext autograd_magic")
print("anywidget" in sys.modules, "autograd_magic.views.widget" in sys.modules)
"""


def test_in_a_kernel_the_widget_is_imported_with_the_extension_not_by_the_first_cell() -> None:
    """The first %%autograd cell in a kernel no longer pays ~0.1 s for ipywidgets and anywidget;
    a terminal shell, which shows text, never imports them."""
    seen = {}
    for where in ("kernel", "terminal"):
        done = subprocess.run([sys.executable, "-c", IMPORTS, where], capture_output=True, text=True, timeout=180,
                              cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr
        seen[where] = done.stdout.split()[-2:]
    assert seen == {"kernel": ["True", "True"], "terminal": ["False", "False"]}
