#!/usr/bin/env bash
# Set up everything the demo and the test suite need, from nothing; safe to re-run.
#
#   - Debian's chromium (for the browser tests) when /usr/bin/chromium is missing
#   - a virtual environment at .venv
#   - the pinned CPU build of torch, then this package with its test extras (skipped while
#     pyproject.toml is unchanged since the last install: a stamp in .venv holds its hash)
#   - JupyterLab settings for the demo (scripts/jupyterlab/overrides.json into the venv): save the
#     widgets' state with the notebook, so a notebook you ran reopens with its views; no news pop-up
#
# Used by scripts/demo.sh (README quick start) and by .ci/run, so both set up the same way.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION=2.13.0  # a CPU wheel of this version is on the project's machines; see README
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 DEBIAN_FRONTEND=noninteractive

say() { printf '\n== %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
    else return 1
    fi
}

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then as_root apt-get update -q || return 1; apt_updated=1; fi
    as_root apt-get install -y -q --no-install-recommends "$@"
}

python_ok() { command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }

PYTHON=${PYTHON:-python3}
if ! python_ok "$PYTHON"; then
    say "installing python3 and its venv module"
    apt_install python3 python3-venv python3-pip || { echo "need Python >= 3.10 with venv; set PYTHON=..." >&2; exit 1; }
    PYTHON=python3
fi

if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's chromium (for the browser tests)"
    apt_install chromium fonts-dejavu-core \
        || echo "warning: could not install chromium (not root?); the browser tests will be skipped" >&2
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi

if ! .venv/bin/python -c "import torch, sys; sys.exit(not torch.__version__.startswith('$TORCH_VERSION'))" 2>/dev/null; then
    say "installing torch==$TORCH_VERSION"  # first, so the package's torch>=2.1 takes this one
    .venv/bin/python -m pip install -q "torch==$TORCH_VERSION"
fi

# pip takes ~25 s even when nothing changed: reinstall only when pyproject.toml did (the install is
# editable, so source changes need none) or when the venv no longer imports this checkout's package
STAMP=.venv/.autograd_magic-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $PWD"
installed_here() {  # -I: not the checkout beside us through the current directory
    .venv/bin/python -I -c 'import sys, autograd_magic; sys.exit(not autograd_magic.__file__.startswith(sys.argv[1]))' \
        "$PWD/" 2>/dev/null
}
if [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ] && installed_here; then
    say "autograd_magic is installed and pyproject.toml is unchanged: skipping pip"
else
    say "installing autograd_magic with its test extras"
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$wanted" > "$STAMP"
fi

# overrides.json in the venv's app settings dir: defaults for every JupyterLab started from this venv
settings=.venv/share/jupyter/lab/settings
mkdir -p "$settings"
cp scripts/jupyterlab/overrides.json "$settings/overrides.json"
say "set up: $(.venv/bin/python -c 'import torch, autograd_magic; print("torch", torch.__version__, "| autograd_magic", autograd_magic.__version__)')"
