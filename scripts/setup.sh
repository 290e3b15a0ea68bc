#!/usr/bin/env bash
# Sets up tvmflow on a fresh Debian/Ubuntu machine: apt packages, a virtual environment in
# .venv with the pinned Python dependencies, and tvmflow itself (editable).
#   bash scripts/setup.sh           # what the main job needs
#   bash scripts/setup.sh --board   # also the emulated arm64 board (cached in ~/.cache/tvmflow)
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static binfmt-support debootstrap)
PYTHON=${PYTHON:-python3}
board=0
for arg in "$@"; do
  case "$arg" in
    --board) board=1 ;;
    *) echo "Error: unknown option $arg (use --board)" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# torch==2.13.0 (CPU) is pinned in pyproject.toml; an unpinned torch would pull CUDA wheels.
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

if ((board)); then
  .venv/bin/tvmflow board setup
fi
echo "setup: done ($(.venv/bin/tvmflow --version))"
