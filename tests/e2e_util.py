"""Helpers for the end-to-end tests: the demo notebook, an isolated Jupyter, Chromium.

Everything here runs real programs (a kernel, a JupyterLab server, Debian's
chromium) in a throw-away directory, binds 127.0.0.1 only, and stops what it
started by PID.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo.ipynb"
LAB_OVERRIDES = ROOT / "scripts" / "jupyterlab" / "overrides.json"  # what scripts/setup.sh installs
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path(os.environ.get("AGM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# --- the demo notebook -------------------------------------------------------------------------


def execute_demo_module() -> ModuleType:
    """``scripts/execute_demo.py`` as a module (the tests run what the README tells users to)."""
    path = ROOT / "scripts" / "execute_demo.py"
    spec = importlib.util.spec_from_file_location("agm_execute_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def find_cell(nb: Any, *fragments: str) -> Any:
    """The one code cell whose source contains every fragment."""
    found = [cell for cell in code_cells(nb) if all(f in cell.source for f in fragments)]
    assert len(found) == 1, f"expected one cell with {fragments!r}, found {len(found)}"
    return found[0]


def is_autograd_cell(cell: Any) -> bool:
    return cell.source.lstrip().startswith("%%autograd")


def report_outputs(cell: Any) -> list[Any]:
    """The cell's display outputs that are autograd reports (not prints, not Out[n])."""
    return [
        out
        for out in cell.get("outputs", [])
        if out.output_type == "display_data" and "text/plain" in out.get("data", {})
        and out["data"]["text/plain"].startswith("autograd:")
    ]


def report_text(cell: Any) -> str:
    outputs = report_outputs(cell)
    assert len(outputs) == 1, f"expected one report in {cell.source.splitlines()[:2]}, found {len(outputs)}"
    return str(outputs[0]["data"]["text/plain"])


def diagnostic_kinds(text: str) -> list[str]:
    """``[alias-write]``-style tags of a text/plain report, in order."""
    return re.findall(r"^\s+(?:ERROR|WARNING|NOTE) \[([a-z0-9-]+)\]", text, flags=re.M)


# --- an isolated Jupyter ------------------------------------------------------------------------


def isolated_env(base: Path, python: str = sys.executable) -> dict[str, str]:
    """Environment for a kernel or a server that sees nothing of the user's Jupyter/IPython set-up.

    HOME, the Jupyter dirs and IPYTHONDIR live under ``base``; JUPYTER_PATH (searched first) holds a
    ``python3`` kernelspec that starts ``python``, so the kernel is this venv's interpreter.
    """
    dirs = {name: base / name for name in ("home", "config", "data", "runtime", "ipython", "path", "lab-settings",
                                           "app-settings")}
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    execute_demo_module().write_kernelspec(dirs["path"] / "kernels", python)
    write_lab_settings(dirs["lab-settings"])
    shutil.copyfile(LAB_OVERRIDES, dirs["app-settings"] / "overrides.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(
        HOME=str(dirs["home"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_PATH=str(dirs["path"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["lab-settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        IPYTHONDIR=str(dirs["ipython"]),
        PATH=f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def write_lab_settings(directory: Path) -> None:
    """Every cell in the DOM (no windowing), so the tests can find them. The rest (no news pop-up, widget
    state saved with the notebook) comes from the overrides scripts/setup.sh installs, as users get it."""
    settings: dict[str, dict[str, Any]] = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for rel, value in settings.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """Temporarily replace os.environ (nbclient reads the Jupyter paths from it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    process: subprocess.Popen[bytes]
    port: int
    token: str
    root: Path
    log: Path
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"


@contextmanager
def jupyter_lab(root: Path, base: Path, timeout: float = 90) -> Iterator[LabServer]:
    """JupyterLab serving ``root`` on 127.0.0.1 at a free port with a random token; stopped by PID."""
    port, token = free_port(), secrets.token_hex(16)
    log = base / "jupyterlab.log"
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # lets the test read the kernel's state, not just pixels
        "--ServerApp.allow_root=True",
    ]
    env = isolated_env(base)
    # the venv's own app settings dir, as scripts/setup.sh fills it: overrides.json and nothing else
    cmd.append(f"--LabApp.app_settings_dir={base / 'app-settings'}")
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, env=env, cwd=root, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(process, port, token, root, log, env)
    try:
        wait_until_up(server, timeout)
        yield server
    finally:
        stop(process)


def wait_until_up(server: LabServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text()[-3000:]
            raise RuntimeError(f"jupyter lab exited with {server.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(server.url("api/status"), timeout=5) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer in {timeout}s:\n{server.log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM the server (it shuts its kernels down), then SIGKILL its process group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the group we started: leftover kernels too
    process.wait(5)


# --- Chromium -----------------------------------------------------------------------------------


def require_chromium() -> Path:
    """Debian's chromium, or skip (fail under CI, where the browser tests must run)."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        pytest.importorskip("playwright.sync_api")
        return CHROMIUM
    message = f"{CHROMIUM} not found: install Debian's chromium (bash scripts/setup.sh does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium_context(user_data_dir: Path, *, offline: bool = False, **options: Any) -> Iterator[Any]:
    """A playwright BrowserContext on Debian's chromium with a fresh profile."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            offline=offline,
            viewport=options.pop("viewport", {"width": 1400, "height": 1000}),
            **options,
        )
        try:
            yield context
        finally:
            context.close()


def artifact_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def trust(notebook: Path, env: dict[str, str]) -> None:
    """Sign ``notebook`` for the Jupyter whose data dir ``env`` names (as scripts/demo.sh does for the demo)."""
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(notebook)], env=env, check=True,
                   capture_output=True, timeout=60)


def copy_demo(target_dir: Path, name: str = "demo.ipynb") -> Path:
    target = target_dir / name
    shutil.copyfile(DEMO, target)
    return target
