#!/usr/bin/env bash
# One CI leg: the non-browser suite on another Python and/or torch release, in a venv of its own.
#
#   usage: scripts/ci/leg.sh NAME PYTHON TORCH_VERSION [pytest arguments...]
#   e.g.   scripts/ci/leg.sh torch2.14.1 python3 2.14.1
#
# The venv lives in the cache folder (AGM_CACHE, default ~/.cache/autograd_magic/venv-NAME), so a later CI
# run on the same machine reuses its multi-GB torch; on a new machine it is made from nothing. torch is
# installed first and pinned while the package and its test extras install (pip takes the release from this
# machine's disk where it lies there, else from PyPI). A leg that cannot get its Python or torch fails loudly.
# The suite runs from this checkout (PYTHONPATH), and the run checks that it imported this checkout's package.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 NAME PYTHON TORCH_VERSION [pytest args...]" >&2; exit 2; }
name=$1 python=$2 torch_version=$3
shift 3
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
cache=${AGM_CACHE:-$HOME/.cache/autograd_magic}
venv="$cache/venv-$name"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
started=$SECONDS
say() { printf '== leg %s: %s\n' "$name" "$*"; }

command -v "$python" >/dev/null 2>&1 || { say "FAILED: no interpreter '$python'"; exit 1; }
wanted_python=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv_python() { "$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
if [ "$(venv_python)" != "$wanted_python" ]; then
    say "creating $venv with Python $wanted_python"
    rm -rf "$venv"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"

has_torch() { "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; }
if ! has_torch; then
    say "installing torch==$torch_version"
    "$py" -m pip install -q "torch==$torch_version" || { say "FAILED: could not install torch==$torch_version"; exit 1; }
fi

# the package and its test extras, with torch held where it is; again only when pyproject.toml or the
# checkout's path changed (the install is editable)
stamp="$venv/.autograd_magic-installed"
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $root"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "installing autograd_magic[test]"
    constraint=$(mktemp)
    echo "torch==$torch_version" > "$constraint"
    "$py" -m pip install -q -c "$constraint" -e ".[test]" || { rm -f "$constraint"; say "FAILED: pip install"; exit 1; }
    rm -f "$constraint"
    echo "$wanted" > "$stamp"
fi
has_torch || { say "FAILED: torch is no longer $torch_version after installing the package"; exit 1; }
PYTHONPATH="$root" "$py" -c 'import sys, autograd_magic, torch; assert autograd_magic.__file__.startswith(sys.argv[1]), autograd_magic.__file__; print("== leg", sys.argv[2] + ":", "Python", sys.version.split()[0], "| torch", torch.__version__)' "$root/" "$name"
say "set up in $((SECONDS - started))s"

PYTHONPATH="$root" "$py" -m pytest -p no:cacheprovider -m "not browser" "$@"
say "passed in $((SECONDS - started))s"
