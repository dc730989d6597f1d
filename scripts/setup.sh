#!/usr/bin/env bash
# Set up everything the demo and the test suite need, from nothing; safe to re-run.
#
#   - Debian's chromium (for the browser tests) when /usr/bin/chromium is missing
#   - a virtual environment at .venv
#   - the pinned CPU build of torch, then this package with its test extras
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

say "installing autograd_magic with its test extras"
.venv/bin/python -m pip install -q -e '.[test]'
say "set up: $(.venv/bin/python -c 'import torch, autograd_magic; print("torch", torch.__version__, "| autograd_magic", autograd_magic.__version__)')"
