#!/usr/bin/env bash
# Print the path of a CPython 3.13 interpreter, building it once when there is none.
#
# Debian 12 has no python3.13 package, so the interpreter is built from the `python3.13` source package
# in Debian's archive (trixie), fetched with a private sources list (the machine's own apt setup is not
# touched), configured without optimisations (~10 minutes on 2 cores) and installed under the cache
# folder, where later CI runs on the same machine find it. A system python3.13 is used when present.
#
#   usage: scripts/ci/python313.sh        # prints e.g. /root/.cache/autograd_magic/python3.13/bin/python3.13
set -euo pipefail
CACHE=${AGM_CACHE:-$HOME/.cache/autograd_magic}
PREFIX="$CACHE/python3.13"
SUITE=${AGM_PY313_SUITE:-trixie}

usable() { "$1" -c 'import sys, ssl, venv, ensurepip, sqlite3, lzma, bz2, ctypes; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; }

for candidate in python3.13 "$PREFIX/bin/python3.13"; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then command -v "$candidate"; exit 0; fi
done

log() { printf '== python313: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

deps=(build-essential pkg-config libssl-dev zlib1g-dev libffi-dev libbz2-dev libsqlite3-dev liblzma-dev
      libreadline-dev uuid-dev xz-utils)
missing=()
for p in "${deps[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    as_root apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb-src http://deb.debian.org/debian $SUITE main" > "$work/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
             -o "APT::Sandbox::User=root" -o "Acquire::Check-Valid-Until=false")
log "fetching the python3.13 source package from Debian $SUITE"
apt-get "${apt_private[@]}" update -q >&2
(cd "$work" && apt-get "${apt_private[@]}" source --download-only python3.13 >&2)
orig=$(ls "$work"/python3.13_*.orig.tar.* | head -n 1)
tar -C "$work" -xf "$orig"
src=$(find "$work" -maxdepth 1 -type d -name 'Python-3.13*' | head -n 1)
log "building $(basename "$src") into $PREFIX"
(
    cd "$src"
    ./configure -q --prefix="$PREFIX" --with-ensurepip=install >&2
    make -s -j"$(nproc)" >&2
    rm -rf "$PREFIX"
    make -s altinstall >&2
) 
usable "$PREFIX/bin/python3.13" || { log "the built interpreter lacks a module the tests need"; exit 1; }
echo "$PREFIX/bin/python3.13"
