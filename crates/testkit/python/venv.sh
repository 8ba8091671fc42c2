#!/usr/bin/env bash
# Make (or refresh) a virtual environment the tests run a Python tool from:
#   crates/testkit/python/venv.sh <venv dir> <requirements.txt>
# Installs the pinned requirements from the registry; does nothing when the
# venv already holds exactly these requirements.
set -euo pipefail
venv="$1"
requirements="$2"
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$stamp"
