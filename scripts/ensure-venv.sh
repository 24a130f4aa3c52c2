#!/usr/bin/env bash
# Make sure the virtual environment works before `make` installs into it:
#   scripts/ensure-venv.sh VENV [PYTHON]
# A venv whose python cannot run pip (created while python3-venv was missing, or
# left behind by an upgraded or removed Python) is removed and created again. When
# creating it fails, nothing half-made is left behind and one line says what to install.
set -euo pipefail
venv=${1:?usage: ensure-venv.sh VENV [PYTHON]}
python=${2:-python3}

works() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }

works && exit 0
if [ -e "$venv" ]; then
  echo "$venv is broken (its python cannot run pip); creating it again"
  rm -rf "$venv"
fi
if ! command -v "$python" >/dev/null 2>&1; then
  echo "$python not found: install Python 3.11 or newer (sudo apt-get install -y python3 python3-venv)" >&2
  exit 1
fi
if ! error=$("$python" -m venv "$venv" 2>&1) || ! works; then
  rm -rf "$venv"
  if [ -z "$error" ] || grep -qiE 'ensurepip|python3[.0-9]*-venv|No module named (venv|pip)' <<<"$error"; then
    echo "could not create $venv: $python has no working venv module; install python3-venv (sudo apt-get install -y python3-venv), then run make again" >&2
  else
    echo "could not create $venv with $python: $(grep -m 1 . <<<"$error")" >&2
  fi
  exit 1
fi
