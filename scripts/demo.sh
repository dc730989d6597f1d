#!/usr/bin/env bash
# README quick start, command 1: set everything up, then open the demo in JupyterLab.
# Extra arguments go to `jupyter lab` (e.g. --no-browser, --port 8889).
#
# It opens my-demo.ipynb, your working copy of demo.ipynb (git-ignored, made on the first run):
# running and saving it leaves the tracked demo.ipynb as committed. Delete it to start again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

# The venv's own kernelspec first, so the notebook's python3 kernel is this venv's
# interpreter even when the user has another python3 kernelspec of their own.
export JUPYTER_PATH="$PWD/.venv/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
COPY=my-demo.ipynb
if [ ! -f "$COPY" ]; then
    cp demo.ipynb "$COPY"
    # Trust our own saved outputs: JupyterLab then restores the interactive views from the
    # notebook's widget state before anything runs (untrusted, it strips the reports' SVG and CSS).
    # Once you run it, JupyterLab signs what it saves itself.
    .venv/bin/jupyter trust "$COPY"
fi
args=("$COPY" --ServerApp.ip=127.0.0.1)
[ "$(id -u)" = 0 ] && args+=(--allow-root)
echo
echo "== opening $COPY (your copy of demo.ipynb) in JupyterLab (Ctrl+C to stop); then: Run > Run All Cells"
exec .venv/bin/jupyter lab "${args[@]}" "$@"
