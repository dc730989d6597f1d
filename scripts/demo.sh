#!/usr/bin/env bash
# README quick start, command 1: set everything up, then open demo.ipynb in JupyterLab.
# Extra arguments go to `jupyter lab` (e.g. --no-browser, --port 8889).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

# The venv's own kernelspec first, so the notebook's python3 kernel is this venv's
# interpreter even when the user has another python3 kernelspec of their own.
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
# Trust our own saved outputs: JupyterLab then restores the interactive views from the
# notebook's widget state before anything runs (untrusted, it strips the reports' SVG and CSS).
.venv/bin/jupyter trust demo.ipynb
args=(demo.ipynb --ServerApp.ip=127.0.0.1)
[ "$(id -u)" = 0 ] && args+=(--allow-root)
echo
echo "== opening demo.ipynb in JupyterLab (Ctrl+C to stop); then: Run > Run All Cells"
exec .venv/bin/jupyter lab "${args[@]}" "$@"
