"""The set-up scripts through a real bash: what re-running costs, what the demo leaves behind."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for the venv's python: every import check passes, pip only writes down that it ran
echo "$*" >> "$(dirname "$0")/../calls.log"
exit 0
"""


def fake_checkout(tmp_path: Path) -> Path:
    """setup.sh beside a copy of pyproject.toml and a venv whose python is FAKE_PYTHON."""
    root = tmp_path / "checkout"
    (root / "scripts" / "jupyterlab").mkdir(parents=True)
    for rel in ("scripts/setup.sh", "scripts/jupyterlab/overrides.json", "pyproject.toml"):
        shutil.copyfile(ROOT / rel, root / rel)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return root


def pip_runs(root: Path) -> int:
    subprocess.run(["bash", "scripts/setup.sh"], cwd=root, check=True, capture_output=True, timeout=60,
                   env={**os.environ, "PYTHON": "python3"})
    return sum("-m pip install" in line for line in (root / ".venv" / "calls.log").read_text().splitlines())


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="setup.sh would install chromium first")
def test_setup_reinstalls_only_when_pyproject_changes(tmp_path: Path) -> None:
    root = fake_checkout(tmp_path)
    assert pip_runs(root) == 1
    assert pip_runs(root) == 1  # nothing changed: no pip, the server starts ~25 s sooner
    with (root / "pyproject.toml").open("a") as out:
        out.write("\n# a new dependency\n")
    assert pip_runs(root) == 2
    installed = root / ".venv" / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert filecmp.cmp(installed, ROOT / "scripts" / "jupyterlab" / "overrides.json", shallow=False)


def test_running_the_demo_leaves_the_checkout_clean() -> None:
    """demo.sh opens my-demo.ipynb; JupyterLab's checkpoints and that copy are ignored by git."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "my-demo.ipynb", ".ipynb_checkpoints/demo-checkpoint.ipynb"],
                             cwd=ROOT, capture_output=True, text=True, check=False)
    assert ignored.stdout.split() == ["my-demo.ipynb", ".ipynb_checkpoints/demo-checkpoint.ipynb"]
    assert 'COPY=my-demo.ipynb' in (ROOT / "scripts" / "demo.sh").read_text()
